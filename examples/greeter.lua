-- examples/greeter.lua: coroutine style, straight-line reads.
-- Each client gets its own coroutine; conn:receive yields while C keeps
-- serving everyone else.
--
-- Try it:
--   hotsock examples/greeter.lua         # listening on 127.0.0.1:7001
--   nc 127.0.0.1 7001                    # answer the name prompt, then chat
local hs = require "hotsock"

return {
  listen = 7001,
  timeouts = { idle = 300000 },           -- five quiet minutes and we hang up
  handle = function(conn)
    conn:send("name? ")
    local name = conn:receive("*l")
    if not name or name == "" then
      return                               -- the connection closes after flushing
    end
    hs.log.info("greeted", name, "from", conn.peer)
    conn:send("hello, ", name, "! type lines, or 'bye'\n")
    while true do
      local line, err = conn:receive("*l")
      if not line then
        hs.log.info(name, "left:", err)
        break
      end
      if line == "bye" then
        conn:send("bye, ", name, "\n")
        break
      end
      conn:send(name, ": ", line, "\n")
    end
  end,
}
