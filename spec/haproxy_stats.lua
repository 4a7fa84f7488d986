-- spec/haproxy_stats.lua: talking to an HAProxy a spec started (its stats socket
-- at p.sock, "stats socket PATH level admin"), for spec/proxy_spec.lua and
-- spec/deploy_spec.lua.
local M = {}

-- One command on the stats socket: its whole answer, or nil.
function M.cmd(p, command)
  local unix = require "socket.unix"
  local c = unix.stream()
  if not c then return nil end
  c:settimeout(2)
  if not c:connect(p.sock) then
    c:close()
    return nil
  end
  c:send(command .. "\n")
  local out = {}
  while true do
    local data, err, partial = c:receive(4096)
    out[#out + 1] = data or partial
    if not data or err then break end
  end
  c:close()
  return table.concat(out)
end

-- "show stat" as {["backend/server"] = {status =, check_status =, ...}}.
function M.stat(p)
  local text = M.cmd(p, "show stat")
  if not text then return {} end
  local names, rows = nil, {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 2) == "# " then
      names = {}
      for f in (line:sub(3) .. ","):gmatch("([^,]*),") do names[#names + 1] = f end
    elseif names then
      local row, i = {}, 0
      for f in (line .. ","):gmatch("([^,]*),") do
        i = i + 1
        if names[i] then row[names[i]] = f end
      end
      rows[(row.pxname or "") .. "/" .. (row.svname or "")] = row
    end
  end
  return rows
end

return M
