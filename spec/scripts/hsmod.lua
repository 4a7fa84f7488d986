-- Script exercising the hotsock module, used by spec/hotsock_module_spec.lua.
local hs = require "hotsock"

local COUNTERS = { "accepted", "rejected", "active", "closed", "bytes_in",
  "bytes_out", "frames_in", "handler_errors", "handler_timeouts",
  "oversize_frames", "outbuf_disconnects", "timeouts", "reload_ok",
  "reload_failed", "generation", "lua_memory" }

return {
  framing = "line",

  on_connect = function(conn) conn:send("id ", tostring(conn.id), "\n") end,

  on_message = function(conn, line)
    local cmd, rest = line:match("^(%S*)%s?(.*)$")
    if cmd == "after" then
      local t0 = hs.now()
      hs.after(100, function()
        conn:send("later ", string.format("%.0f", hs.now() - t0), "\n")
      end)
    elseif cmd == "cancel" then
      local t = hs.after(100, function() conn:send("cancelled timer fired\n") end)
      t:cancel()
      hs.after(250, function() conn:send("yes\n") end)
    elseif cmd == "every" then
      local n = 0
      local t
      t = hs.every(30, function()
        n = n + 1
        if n == 5 then
          t:cancel()
          conn:send("done ", tostring(n), "\n")
        end
      end)
      hs.after(400, function() conn:send("count ", tostring(n), "\n") end)
    elseif cmd == "now" then
      local v = hs.now()
      conn:send(type(v), " ", string.format("%.3f", v), "\n")
    elseif cmd == "count" then
      local n = 0
      for c in hs.clients() do
        assert(type(c.id) == "number")
        n = n + 1
      end
      conn:send("clients ", tostring(n), "\n")
    elseif cmd == "room" then
      conn.room = rest
      conn:send("joined\n")
    elseif cmd == "all" then
      local n = hs.broadcast("all:" .. rest .. "\n")
      conn:send("sent ", tostring(n), "\n")
    elseif cmd == "roomsay" then
      local room = conn.room
      local n = hs.broadcast("room:" .. rest .. "\n", function(c) return c.room == room end)
      conn:send("sent ", tostring(n), "\n")
    elseif cmd == "others" then
      local n = hs.broadcast("other:" .. rest .. "\n", conn)
      conn:send("sent ", tostring(n), "\n")
    elseif cmd == "log" then
      hs.log.info("info-marker " .. rest)
      hs.log.warn("warn-marker " .. rest)
      hs.log.error("error-marker " .. rest)
      conn:send("logged\n")
    elseif cmd == "stats" then
      local s = hs.stats()
      local parts = {}
      for _, k in ipairs(COUNTERS) do parts[#parts + 1] = k .. "=" .. tostring(s[k]) end
      conn:send(table.concat(parts, " "), "\n")
    elseif cmd == "boom" then
      error("boom-marker")
    elseif cmd == "shared" then
      hs.shared.v = (hs.shared.v or 0) + 1
      conn:send(type(hs.shared), " ", tostring(hs.shared.v), "\n")
    else
      conn:send("echo ", line, "\n")
    end
  end,
}
