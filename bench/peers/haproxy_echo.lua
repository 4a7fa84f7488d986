-- bench/peers/haproxy_echo.lua: a line echo as an HAProxy Lua TCP service
-- (loaded by haproxy_echo.cfg.in). getline() returns a line with its '\n'
-- (or what the buffer holds when a line fills it); HAProxy 2.6's receive()
-- without a size waits for the end of the stream, so a service that echoes
-- as bytes arrive goes line by line.
core.register_service("echo", "tcp", function(applet)
  while true do
    local d = applet:getline()
    if d == nil or d == "" then return end
    applet:send(d)
  end
end)
