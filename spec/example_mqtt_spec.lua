-- examples/mqtt.lua driven by the real clients: mosquitto_pub and
-- mosquitto_sub (mosquitto-clients), plus raw sockets for the last will,
-- keep-alive and malformed packets.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local pack = string.pack

local have = H.have

-- Run a shell command, bounded; returns stdout and the exit code.
local sh = H.sh

-- Start a shell command in the background under `timeout`; :wait() gives
-- its stdout and exit code once it has exited by itself.
local function bg(cmd, limit)
  local d = H.tempdir()
  local inner = ("timeout -k 1 %d %s >%s/out 2>%s/err </dev/null; echo $? >%s/rc.tmp; mv %s/rc.tmp %s/rc")
    :format(limit or 10, cmd, d, d, d, d, d)
  os.execute("sh -c " .. H.quote(inner) .. " >/dev/null 2>&1 </dev/null &")
  return {
    wait = function()
      local rc = H.wait_until(function()
        local s = H.read_file(d .. "/rc")
        return s and tonumber(s:match("%d+"))
      end, (limit or 10) + 3, 0.02)
      return H.read_file(d .. "/out") or "", rc, H.read_file(d .. "/err") or ""
    end,
  }
end

local function start()
  return H.start("examples/mqtt.lua", { args = { "--log-level", "debug" } })
end

-- mosquitto_sub in the background; returns once the broker has the
-- subscription (the example logs each one at debug level)
local function sub(srv, args, filter)
  local before = srv:count_log("subscribed to " .. filter .. " ", true)
  local p = bg(("mosquitto_sub -h 127.0.0.1 -p %d %s"):format(srv.port, args))
  assert.is_truthy(H.wait_until(function()
    return srv:count_log("subscribed to " .. filter .. " ", true) > before
  end, 5), "no subscription to " .. filter .. "\n" .. srv:stderr():sub(-2000))
  return p
end

local function pub(srv, args)
  local out, code = sh(("timeout 10 mosquitto_pub -h 127.0.0.1 -p %d %s"):format(srv.port, args))
  assert.are.equal(0, code, out)
end

---------------------------------------------------------------------------
-- a raw client
---------------------------------------------------------------------------

local function varint(n)
  local s = ""
  repeat
    local b = n % 128
    n = n // 128
    s = s .. string.char(n > 0 and b + 128 or b)
  until n == 0
  return s
end

local function packet(first, body)
  return string.char(first) .. varint(#body) .. body
end

-- CONNECT with a client id; opts.keep (s, default 60), opts.will = {topic,
-- payload, qos}
local function connect_packet(id, opts)
  opts = opts or {}
  local flags, tail = 2, ""
  if opts.will then
    flags = flags | 4 | ((opts.will[3] or 0) << 3)
    tail = pack(">s2s2", opts.will[1], opts.will[2])
  end
  return packet(0x10, pack(">s2BBI2s2", "MQTT", 4, flags, opts.keep or 60, id) .. tail)
end

-- one packet from c: its first byte and the rest after the remaining length
local function read_packet(c)
  local b, err = c:receive(1)
  if not b then return nil, err end
  local len, mult = 0, 1
  repeat
    local d = assert(c:receive(1)):byte()
    len = len + (d & 127) * mult
    mult = mult * 128
  until d < 128
  local body = len > 0 and assert(c:receive(len)) or ""
  return b:byte(), body
end

local function raw_client(srv, id, opts)
  local c = srv:connect()
  H.send(c, connect_packet(id, opts))
  local first, body = read_packet(c)
  assert.are.equal(0x20, first)
  assert.are.equal("\0\0", body) -- CONNACK, accepted
  return c
end

local function subscribe(c, filter, qos, id)
  H.send(c, packet(0x82, pack(">I2s2B", id or 1, filter, qos or 0)))
  local first, body = read_packet(c)
  assert.are.equal(0x90, first)
  return body
end

-- a PUBLISH from the broker: qos, retain, topic, packet id (QoS > 0), payload
local function read_publish(c)
  local first, body = read_packet(c)
  assert.is_truthy(first, body)
  assert.are.equal(3, first >> 4, ("not a PUBLISH: %02x"):format(first))
  local qos, retain = (first >> 1) & 3, first & 1
  local topic, p = string.unpack(">s2", body)
  local id
  if qos > 0 then id, p = string.unpack(">I2", body, p) end
  return { qos = qos, retain = retain, topic = topic, id = id, payload = body:sub(p) }
end

describe("examples/mqtt.lua", function()
  after_each(H.cleanup)

  if not (have("mosquitto_sub") and have("mosquitto_pub")) then
    pending("mosquitto-clients is not installed")
    return
  end

  it("passes --check", function()
    local rc, out = H.run({ "--check", H.root .. "/examples/mqtt.lua" })
    assert.are.equal(0, rc)
    assert.matches("event style, framing length varint header 1", out)
  end)

  it("delivers a publish to a wildcard subscriber (+ and #)", function()
    local srv = start()
    local s = sub(srv, "-t 'sensors/+/temp' -t 'alerts/#' -F '%t %p' -C 3 -W 5", "alerts/#")
    pub(srv, "-t sensors/kitchen/humidity -m no")    -- + is one level
    pub(srv, "-t sensors/a/b/temp -m no")
    pub(srv, "-t other -m no")
    pub(srv, "-t sensors/kitchen/temp -m 21.5")
    pub(srv, "-t alerts -m parent")                  -- # matches the parent too
    pub(srv, "-t alerts/door/front -m open")
    local out, rc, err = s:wait()
    assert.are.equal(0, rc, err)
    assert.are.equal("sensors/kitchen/temp 21.5\nalerts parent\nalerts/door/front open\n", out)
  end)

  it("round-trips QoS 1 and delivers at the lower QoS of publish and subscription", function()
    local srv = start()
    local s1 = sub(srv, "-t q/one -q 1 -F '%q %m %t %p' -C 2 -W 5", "q/one")
    local s0 = sub(srv, "-t 'q/+' -q 0 -F '%q %t %p' -C 2 -W 5", "q/+")
    pub(srv, "-t q/one -m first -q 1")  -- exits 0 only after its PUBACK
    pub(srv, "-t q/one -m second -q 0")
    local out, rc, err = s1:wait()
    assert.are.equal(0, rc, err)
    assert.are.equal("1 1 q/one first\n0 0 q/one second\n", out)
    out, rc, err = s0:wait()
    assert.are.equal(0, rc, err)
    assert.are.equal("0 q/one first\n0 q/one second\n", out)
    -- the broker's packet ids and PUBACK, seen on a raw socket
    local c = raw_client(srv, "raw")
    assert.are.equal("\0\7\1", subscribe(c, "q/#", 2, 7)) -- QoS 2 asked, 1 granted
    H.send(c, packet(0x32, pack(">s2I2", "q/raw", 4242) .. "payload"))
    assert.are.same({ 0x40, "\x10\x92" }, { read_packet(c) }) -- PUBACK 4242
    -- its own subscription: delivered at QoS 1 with the broker's packet id
    assert.are.same({ qos = 1, retain = 0, topic = "q/raw", id = 1, payload = "payload" }, read_publish(c))
    H.send(c, "\x40\x02\x00\x01") -- our PUBACK
    H.send(c, packet(0x34, pack(">s2I2", "q/two", 5) .. "twice")) -- QoS 2
    assert.are.same({ 0x50, "\0\5" }, { read_packet(c) })          -- PUBREC
    assert.are.same({ qos = 1, retain = 0, topic = "q/two", id = 2, payload = "twice" }, read_publish(c))
    H.send(c, packet(0x3c, pack(">s2I2", "q/two", 5) .. "twice")) -- resent (DUP): not delivered again
    assert.are.same({ 0x50, "\0\5" }, { read_packet(c) })
    H.send(c, "\x62\x02\x00\x05") -- PUBREL
    assert.are.same({ 0x70, "\0\5" }, { read_packet(c) })          -- PUBCOMP
    H.send(c, "\xc0\x00")
    assert.are.same({ 0xd0, "" }, { read_packet(c) })
  end)

  it("keeps a retained message for later subscribers; an empty one clears it", function()
    local srv = start()
    pub(srv, "-t status/door -m closed -r -q 1")
    pub(srv, "-t status/door -m open -r")        -- replaces it
    pub(srv, "-t status/light -m on")            -- not retained
    local out, rc = sh(("timeout 10 mosquitto_sub -h 127.0.0.1 -p %d -t 'status/#' -F '%%r %%q %%t %%p' -C 1 -W 5")
      :format(srv.port))
    assert.are.equal(0, rc, out)
    assert.are.equal("1 0 status/door open\n", out)
    -- a live subscriber gets a retained publish with the retain flag off
    local live = sub(srv, "-t status/light -F '%r %t %p' -C 1 -W 5", "status/light")
    pub(srv, "-t status/light -m off -r")
    assert.are.equal("0 status/light off\n", (live:wait()))
    -- cleared with an empty retained payload: nothing for the next one
    pub(srv, "-t status/door -r -n")
    out, rc = sh(("timeout 10 mosquitto_sub -h 127.0.0.1 -p %d -t status/door -C 1 -W 1"):format(srv.port))
    assert.are.equal(27, rc, out) -- mosquitto_sub's exit code for -W
    assert.are.equal("Timed out\n", out)
    -- a retained message survives a reload of the script
    srv:signal("HUP")
    srv:expect_log("reloaded")
    out, rc = sh(("timeout 10 mosquitto_sub -h 127.0.0.1 -p %d -t 'status/+' -F '%%t %%p' -C 1 -W 5"):format(srv.port))
    assert.are.equal(0, rc, out)
    assert.are.equal("status/light off\n", out)
  end)

  it("publishes the last will of a client that goes away without DISCONNECT", function()
    local srv = start()
    local watcher = sub(srv, "-t 'wills/#' -q 1 -F '%t %p %q' -C 1 -W 5", "wills/#")
    -- a clean goodbye: no will
    local polite = raw_client(srv, "polite", { will = { "wills/polite", "should not appear" } })
    H.send(polite, "\xe0\x00")
    assert.are.equal("closed", (H.read_to_close(polite)))
    -- an abrupt one: CONNECT with a will, then the socket closes
    local rude = raw_client(srv, "rude", { will = { "wills/rude", "gone", 1 } })
    rude:close()
    local out, rc, err = watcher:wait()
    assert.are.equal(0, rc, err)
    assert.are.equal("wills/rude gone 1\n", out)
    srv:expect_log("client rude gone (eof), will published", 3, true)
    assert.are.equal(0, srv:count_log("client polite gone (closed), will published", true))
  end)

  it("closes a client silent past 1.5 times its keep-alive, and publishes its will", function()
    local srv = start()
    local w = raw_client(srv, "watcher")
    subscribe(w, "wills/+")
    local c = raw_client(srv, "sleepy", { keep = 1, will = { "wills/sleepy", "timed out" } })
    H.send(c, "\xc0\x00") -- PINGREQ
    assert.are.same({ 0xd0, "" }, { read_packet(c) })
    local t0 = H.now()
    assert.are.equal("closed", (H.read_to_close(c, 5)))
    local took = H.now() - t0
    assert.is_true(took > 1.2 and took < 3, "closed after " .. took .. " s")
    local p = read_publish(w)
    assert.are.equal("wills/sleepy", p.topic)
    assert.are.equal("timed out", p.payload)
  end)

  it("closes only the client that sends a 5-byte remaining length", function()
    local srv = start()
    local good = raw_client(srv, "good")
    subscribe(good, "#")
    local bad = raw_client(srv, "bad", { will = { "wills/bad", "malformed" } })
    H.send(bad, "\x30\xff\xff\xff\xff\x01")
    local err = H.read_to_close(bad)
    assert.is_truthy(err == "closed" or err:find("reset"), err)
    srv:expect_log("malformed length prefix")
    -- its will still goes out; the other client is served as before
    local p = read_publish(good)
    assert.are.same({ "wills/bad", "malformed" }, { p.topic, p.payload })
    H.send(good, "\xc0\x00")
    assert.are.same({ 0xd0, "" }, { read_packet(good) })
    pub(srv, "-t after/bad -m still-here")
    p = read_publish(good)
    assert.are.same({ "after/bad", "still-here" }, { p.topic, p.payload })
  end)

  it("unsubscribes, refuses bad filters, and closes on protocol errors", function()
    local srv = start()
    local c = raw_client(srv, "u")
    -- a good filter and two bad ones in one SUBSCRIBE: one code each
    H.send(c, packet(0x82, pack(">I2s2Bs2Bs2B", 9, "a/+", 1, "a/#/b", 0, "a+", 0)))
    assert.are.same({ 0x90, "\0\9\1\x80\x80" }, { read_packet(c) })
    H.send(c, packet(0xa2, pack(">I2s2", 10, "a/+")))
    assert.are.same({ 0xb0, "\0\10" }, { read_packet(c) })
    pub(srv, "-t a/b -m unseen")
    assert.is_true(H.quiet(c, 0.3))
    -- a packet before CONNECT
    local early = srv:connect()
    H.send(early, "\xc0\x00")
    assert.are.equal("closed", (H.read_to_close(early)))
    -- a wildcard in a PUBLISH topic
    local w = raw_client(srv, "w")
    H.send(w, packet(0x30, pack(">s2", "a/#") .. "x"))
    assert.are.equal("closed", (H.read_to_close(w)))
    -- a short packet: string.unpack fails, the connection closes
    local s = raw_client(srv, "short")
    H.send(s, "\x82\x01\x00")
    assert.are.equal("closed", (H.read_to_close(s)))
    srv:expect_log("closing short: malformed SUBSCRIBE")
    -- a protocol level it does not speak (MQTT 5): CONNACK 1, closed
    local v5 = srv:connect()
    H.send(v5, packet(0x10, pack(">s2BBI2", "MQTT", 5, 2, 60) .. "\0" .. pack(">s2", "five")))
    assert.are.same({ 0x20, "\0\1" }, { read_packet(v5) })
    assert.are.equal("closed", (H.read_to_close(v5)))
    -- the first client is still there
    H.send(c, "\xc0\x00")
    assert.are.same({ 0xd0, "" }, { read_packet(c) })
  end)

  it("closes a connection that sends no CONNECT in time", function()
    local srv = H.start("examples/mqtt.lua", { args = { "--timeout", "read=300" } })
    local c = srv:connect()
    local t0 = H.now()
    assert.are.equal("closed", (H.read_to_close(c, 5)))
    assert.is_true(H.now() - t0 < 3)
    srv:expect_log("read timeout")
  end)

  it("takes over a client id in use: the old connection closes", function()
    local srv = start()
    local old = raw_client(srv, "same")
    local new = raw_client(srv, "same")
    assert.are.equal("closed", (H.read_to_close(old)))
    H.send(new, "\xc0\x00")
    assert.are.same({ 0xd0, "" }, { read_packet(new) })
  end)
end)
