-- examples/chat.lua: a line-based chat room, event style.
-- Nicknames, join and leave notices, broadcast, /nick, /who and /quit.
--
-- Try it (two terminals or more):
--   hotsock examples/chat.lua            # listening on 127.0.0.1:7002
--   nc 127.0.0.1 7002
--   socat READLINE TCP:127.0.0.1:7002    # with line editing
-- Edit this file while people chat: the next message uses the new code and
-- nobody is disconnected.
local hs = require "hotsock"

local function send_others(conn, ...)
  local msg = table.concat({ ... })
  hs.broadcast(msg, function(c) return c ~= conn and c.nick ~= nil end)
end

local commands = {}

function commands.nick(conn, arg)
  if not arg or not arg:match("^[%w_%-]+$") or #arg > 20 then
    return conn:send("* nick must be 1-20 letters, digits, _ or -\n")
  end
  for c in hs.clients() do
    if c ~= conn and c.nick == arg then
      return conn:send("* ", arg, " is taken\n")
    end
  end
  local old = conn.nick
  conn.nick = arg
  if old then
    send_others(conn, "* ", old, " is now ", arg, "\n")
  else
    send_others(conn, "* ", arg, " joined\n")
  end
  conn:send("* you are ", arg, "\n")
end

function commands.who(conn)
  local names = {}
  for c in hs.clients() do
    if c.nick then names[#names + 1] = c.nick end
  end
  table.sort(names)
  conn:send("* here: ", table.concat(names, ", "), "\n")
end

function commands.quit(conn)
  conn:send("* bye\n")
  conn:close()
end

return {
  listen = "127.0.0.1:7002",
  framing = "line",
  max_frame = 1024,

  on_connect = function(conn)
    conn:send("* welcome to hotsock chat. pick a nick: /nick NAME\n")
  end,

  on_message = function(conn, line)
    local cmd, arg = line:match("^/(%a+)%s*(.-)%s*$")
    if cmd then
      local f = commands[cmd:lower()]
      if f then return f(conn, arg ~= "" and arg or nil) end
      return conn:send("* commands: /nick NAME, /who, /quit\n")
    end
    if not conn.nick then
      return conn:send("* pick a nick first: /nick NAME\n")
    end
    if line ~= "" then send_others(conn, "<", conn.nick, "> ", line, "\n") end
  end,

  on_close = function(conn, reason)
    if conn.nick then send_others(conn, "* ", conn.nick, " left (", reason, ")\n") end
  end,
}
