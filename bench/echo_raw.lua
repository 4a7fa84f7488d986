-- bench/echo_raw.lua: the echo of examples/echo.lua without line framing:
-- every read's bytes go back as they came ("raw" framing). bench/run.sh runs
-- it as "hotsock-raw" beside the peers, which echo the same way.
return {
  listen = "127.0.0.1:7000",
  framing = "raw",
  on_message = function(conn, data)
    conn:send(data)
  end,
}
