-- Coroutine-style script used by spec/coroutine_spec.lua. The first line a
-- client sends picks a mode. Reports go to stderr as "@@ ..." lines.
local hs = require "hotsock"

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function log(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  io.stderr:write("@@ ", table.concat(t, " "), "\n")
end

local modes = {}

function modes.lines(conn)
  while true do
    local l, err, partial = conn:receive("*l")
    if not l then
      log("PARTIAL", conn.id, err, "[" .. hex(partial or "") .. "]")
      return
    end
    conn:send("line:", hex(l), "\n")
  end
end

function modes.n(conn)
  while true do
    local len, err = conn:receive("*l")
    if not len then return end
    local d, err2, partial = conn:receive(tonumber(len))
    if not d then
      log("NPARTIAL", conn.id, err2, "[" .. hex(partial or "") .. "]")
      return
    end
    conn:send("got:", d, "\n")
  end
end

function modes.all(conn)
  local d, err, partial = conn:receive("*a")
  if d then
    conn:send("all:", tostring(#d), ":", hex(d), "\n")
  else
    conn:send("allerr:", tostring(err), ":", hex(partial or ""), "\n")
  end
end

function modes.delim(conn)
  for _ = 1, 3 do
    local d, err = conn:receive({ delimiter = "||" })
    if not d then return end
    conn:send("d:", d, "\n")
  end
end

function modes.len(conn)
  for _ = 1, 3 do
    local d, err = conn:receive({ length = "u16be" })
    if not d then return end
    conn:send("l:", d, "\n")
  end
end

function modes.sleep(conn)
  conn:send("a\n")
  local r = hs.sleep(200)
  conn:send("b ", tostring(r), "\n")
end

function modes.long(conn)
  conn:send("s\n")
  hs.sleep(1000)
  conn:send("late\n")
end

function modes.sleepclose(conn)
  conn:send("sleeping\n")
  -- the server closes the connection 50 ms into the sleep
  hs.after(50, function() conn:close() end)
  local r, e = hs.sleep(300)
  log("SLEPT", conn.id, r, e)
end

function modes.sleeppeer(conn)
  conn:send("sleeping\n")
  local r, e = hs.sleep(200)
  local l, e2 = conn:receive("*l")
  log("SLEPTPEER", conn.id, r, e, l, e2)
end

function modes.big(conn)
  local n = tonumber(conn:receive("*l"))
  conn:send(string.rep("z", n - 4), "END\n")
  -- returning closes the connection after the output is flushed
end

return {
  handle = function(conn)
    conn:send("id ", tostring(conn.id), "\n")
    local mode, err, partial = conn:receive("*l")
    if not mode then
      log("FIRST", conn.id, err, "[" .. hex(partial or "") .. "]")
      return
    end
    local f = modes[mode]
    if not f then
      conn:send("unknown mode\n")
      return
    end
    f(conn)
  end,
  on_close = function(conn, reason) log("CLOSE", conn.id, reason) end,
}
