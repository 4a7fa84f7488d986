-- Event-style script driven by line commands, used by spec/event_spec.lua.
-- Reports into stderr as lines starting with "@@ ".
local hs = require "hotsock"

local function log(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  io.stderr:write("@@ ", table.concat(t, " "), "\n")
end

local saved -- a connection kept after it closed

local CLOSED_METHODS = {
  { "send", "x" }, { "close" }, { "abort" }, { "shutdown" }, { "pause" },
  { "resume" }, { "buffered" }, { "framing", "line" },
  { "settimeouts", { idle = 1000 } },
}

local function probe_closed(c)
  local results = {}
  for _, m in ipairs(CLOSED_METHODS) do
    local name = m[1]
    local ok, err, why = pcall(function() return c[name](c, table.unpack(m, 2)) end)
    local r
    if ok and err == nil and why then
      r = "nil:" .. tostring(why)
    elseif ok then
      r = "noerror"
    elseif tostring(err):find("attempt to use a closed connection", 1, true) then
      r = "raised"
    else
      r = "other:" .. tostring(err):gsub("%s+", "_")
    end
    results[#results + 1] = name .. "=" .. r
  end
  local okf, closed = pcall(function() return c.closed end)
  log("AFTERCLOSE", okf and tostring(closed) or "field-raised", table.concat(results, ","))
end

return {
  framing = "line",
  max_outbuf = 64 * 1024 * 1024,

  on_connect = function(conn)
    conn.count = 0
    log("CONNECT", conn.id)
  end,

  on_message = function(conn, line)
    conn.count = conn.count + 1
    local cmd, rest = line:match("^(%S*)%s?(.*)$")
    if conn.half then
      local ok, r1, r2 = pcall(conn.send, conn, "late\n")
      log("AFTERHALF", conn.id, line, ok and "returned" or "raised", r1, r2)
    elseif cmd == "fields" then
      conn:send(table.concat({ math.type(conn.id), tostring(conn.id), conn.peer,
        conn.peer_ip, tostring(conn.peer_port), math.type(conn.peer_port) or type(conn.peer_port),
        conn.local_addr, tostring(conn.closed) }, "|"), "\n")
    elseif cmd == "set" then
      conn.nick = rest
      conn:send("ok\n")
    elseif cmd == "get" then
      conn:send(tostring(conn.nick), " ", tostring(conn.count), "\n")
    elseif cmd == "setro" then
      local ok1 = pcall(function() conn.id = 12345 end)
      local ok2 = pcall(function() conn.peer = "1.2.3.4:5" end)
      conn:send(tostring(ok1), " ", tostring(ok2), " ", tostring(conn.id ~= 12345),
        " ", tostring(conn.peer ~= "1.2.3.4:5"), "\n")
    elseif cmd == "multi" then
      local r = conn:send("a", "b", "c", "\n")
      local r2 = conn:send({ "x", "y", "z", "\n" })
      conn:send(tostring(r), " ", tostring(r2), "\n")
    elseif cmd == "bigclose" then
      local n = tonumber(rest)
      conn:send(string.rep("x", n - 4), "END\n")
      conn:close()
    elseif cmd == "abort" then
      conn:abort()
    elseif cmd == "half" then
      conn:send("bye\n")
      conn:shutdown()
      conn.half = true
    elseif cmd == "pause" then
      conn.resumed = false
      conn:pause()
      hs.after(300, function()
        conn.resumed = true
        conn:resume()
      end)
      conn:send("paused\n")
    elseif cmd == "probe" then
      conn:send("probe ", tostring(conn.resumed), "\n")
    elseif cmd == "flood" then
      local n = tonumber(rest)
      local b0 = conn:buffered()
      conn:send(string.rep("y", n - 4), "END\n")
      local b1 = conn:buffered()
      hs.after(200, function()
        if not conn.closed then log("BUFFERED", conn.id, b0, b1, conn:buffered()) end
      end)
    elseif cmd == "save" then
      saved = conn
      conn:send("saved\n")
    elseif cmd == "saveclose" then
      saved = conn
      conn:send("saved\n")
      conn:close()
    else
      conn:send(line, "\n")
    end
  end,

  on_drain = function(conn)
    log("DRAIN", conn.id, conn:buffered())
    if not conn.drained then
      conn.drained = true
      conn:send("drained\n")
    end
  end,

  on_close = function(conn, reason)
    log("CLOSE", conn.id, reason)
    if conn == saved then
      hs.after(50, function() probe_closed(saved) end)
    end
  end,
}
