-- bench/peers/luv_echo.lua PORT: an echo server on luv (libuv for Lua 5.4,
-- Debian's lua-luv), written the way luv's examples write one: bytes are
-- echoed as they arrive.
local uv = require "luv"
local port = tonumber(arg[1]) or 7003
local srv = uv.new_tcp()
assert(srv:bind("127.0.0.1", port))
assert(srv:listen(511, function(err)
  if err then return end
  local c = uv.new_tcp()
  if not srv:accept(c) then c:close() return end
  c:nodelay(true)
  c:read_start(function(rerr, data)
    if data then
      c:write(data)
    elseif not c:is_closing() then
      c:close()
    end
  end)
end))
io.stderr:write("listening on 127.0.0.1:", port, "\n")
uv.run()
