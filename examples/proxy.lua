-- examples/proxy.lua: a TCP relay. Each client gets its own connection to
-- the upstream; bytes flow both ways in C (conn:pipe), with backpressure: a
-- side whose peer reads slowly stops being read from until the peer catches
-- up. One log line per client says how many bytes went each way.
--
-- Try it (relay port 7003 to a Redis-protocol server on 6380):
--   hotsock -l 127.0.0.1:6380 examples/redis.lua &
--   hotsock examples/proxy.lua 127.0.0.1:6380        # listening on 127.0.0.1:7003
--   redis-cli -p 7003 ping
-- The upstream comes from the first argument, else from `upstream` below.
local hs = require "hotsock"

local upstream = arg[1] or "127.0.0.1:6379"
local host, port = upstream:match("^%[(.+)%]:(%d+)$")
if not host then host, port = upstream:match("^(.*):(%d+)$") end
if not host or host == "" then
  error("upstream must be host:port or [v6]:port, not " .. upstream)
end
port = tonumber(port)

return {
  listen = "127.0.0.1:7003",
  framing = "raw",
  -- The relay pauses a reader while the other side holds more than this.
  high_water = 256 * 1024,

  on_connect = function(client)
    client:pause() -- nothing is read until the upstream answers
    local up = hs.connect(host, port, {
      timeout = 5000,
      on_connect = function(up)
        client:pipe(up)
        up:pipe(client)
        client:resume()
      end,
      on_close = function(up, reason)
        if up.bytes_in == 0 and up.bytes_out == 0 and not client.closed then
          hs.log.warn(("upstream %s: %s; closing client %s"):format(upstream, reason, client.id))
          client:close()
        end
      end,
    })
    client.upstream = up
  end,

  on_close = function(client, reason)
    local up = client.upstream
    hs.log.info(("client %s (%s): %d bytes up, %d bytes down, %s"):format(
      client.id, client.peer, client.bytes_in, client.bytes_out, reason))
    if up and not up.closed then up:close() end
  end,
}
