-- examples/echo.lua: a line echo server, event style.
--
-- Try it:
--   hotsock examples/echo.lua            # listening on 127.0.0.1:7000
--   nc 127.0.0.1 7000                    # type lines; each comes back
--   socat - TCP:127.0.0.1:7000,crlf      # CRLF lines work too (the CR is stripped)
return {
  listen = "127.0.0.1:7000",
  framing = "line",
  on_message = function(conn, line)
    conn:send(line, "\n")
  end,
}
