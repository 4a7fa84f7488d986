-- spec/proxy_spec.lua: the PROXY protocol (versions 1 and 2) on listeners
-- with proxy_protocol = true or --proxy-protocol. First raw LuaSocket
-- clients that write the headers byte by byte (good ones, split ones,
-- malformed ones, slow ones), then the real HAProxy (send-proxy,
-- send-proxy-v2 with its TLVs, health checks, TLS passed through or
-- terminated in front). Certificates are made at test time with the
-- openssl command in a temp dir; no key is committed. HAProxy runs in the
-- foreground under `timeout` and is stopped by its PID in after_each.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local q = H.quote
local HAPROXY = os.getenv("HOTSOCK_HAPROXY") or "/usr/sbin/haproxy"

local sh = H.sh

local function have_luasec()
  return (pcall(require, "ssl"))
end

---------------------------------------------------------------------------
-- building headers
---------------------------------------------------------------------------

local SIG = "\r\n\r\n\0\r\nQUIT\n" -- the 12-byte v2 signature

local function u16(n) return string.char((n >> 8) & 255, n & 255) end
local function u32(n)
  return string.char((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)
end
local function ip4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return string.char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

-- A version 1 line.
local function v1(s) return "PROXY " .. s .. "\r\n" end

-- A version 2 header: version/command byte, family/transport byte, then
-- the 16-bit length and body.
local function v2(ver_cmd, fam, body) return SIG .. string.char(ver_cmd, fam) .. u16(#body) .. body end

local function tlv(t, v) return string.char(t) .. u16(#v) .. v end

-- PP2_TYPE_SSL: client bits, the 32-bit verify result, then sub-TLVs.
local function ssl_tlv(client, verify, subs) return tlv(0x20, string.char(client) .. u32(verify) .. (subs or "")) end

-- PROXY over TCP/IPv4 and TCP/IPv6 (addresses of IPv6 as 32 hex digits).
local function v2_tcp4(src, dst, sp, dp, tlvs)
  return v2(0x21, 0x11, ip4(src) .. ip4(dst) .. u16(sp) .. u16(dp) .. (tlvs or ""))
end
local function v2_tcp6(src, dst, sp, dp, tlvs)
  return v2(0x21, 0x21, H.unhex(src) .. H.unhex(dst) .. u16(sp) .. u16(dp) .. (tlvs or ""))
end

local V1_GOOD = v1("TCP4 192.0.2.1 198.51.100.7 51234 443")

---------------------------------------------------------------------------
-- the script: each client is told what the script sees, as a Lua table
---------------------------------------------------------------------------

-- On connect the client gets one line, "return {...}": conn.peer,
-- peer_ip, peer_port, listener, conn.tls.version and conn.proxy. Each
-- connection is also logged as "CONN {...}". Lines: PING gets PONG, STATS
-- the counters (and how often on_connect / on_close ran), AGAIN the table
-- once more; anything else is echoed as "echo:LINE". @LISTEN@ is replaced
-- by the module's listen value.
local SCRIPT = [[
local hs = require "hotsock"
local function ser(v)
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do out[#out + 1] = "[" .. ser(k) .. "]=" .. ser(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
  elseif t == "string" then
    return (("%q"):format(v):gsub("\\\n", "\\n"))
  end
  return tostring(v)
end
local count = { connects = 0, closes = 0 }
local function info(conn)
  return ser({ peer = conn.peer, peer_ip = conn.peer_ip, peer_port = conn.peer_port,
    listener = conn.listener, tls = conn.tls and conn.tls.version, proxy = conn.proxy })
end
return {
  listen = @LISTEN@,
  framing = "line",
  on_connect = function(conn)
    count.connects = count.connects + 1
    hs.log.info("CONN " .. info(conn))
    conn:send("return ", info(conn), "\n")
  end,
  on_close = function() count.closes = count.closes + 1 end,
  on_message = function(conn, line)
    if line == "PING" then return conn:send("PONG\n") end
    if line == "AGAIN" then return conn:send("return ", info(conn), "\n") end
    if line == "STATS" then
      local s = hs.stats()
      return conn:send("return ", ser({ proxy_failures = s.proxy_failures, timeouts = s.timeouts,
        tls_handshakes = s.tls_handshakes, tls_handshake_failures = s.tls_handshake_failures,
        connects = count.connects, closes = count.closes }), "\n")
    end
    conn:send("echo:", line, "\n")
  end,
}
]]

local function script(listen)
  return (SCRIPT:gsub("@LISTEN@", function() return listen end))
end

-- The table a "return {...}" line holds.
local function decode(line, what)
  assert(line, "no line from the server" .. (what and (": " .. what) or ""))
  local f = assert(load(line, "=answer", "t", {}), line)
  return f()
end

-- The next line from c, decoded.
local function info(c)
  local l, err = H.line(c)
  assert(l, "no answer: " .. tostring(err))
  return decode(l)
end

local function stats(c)
  H.send(c, "STATS\n")
  return info(c)
end

local function closed_ok(err)
  return err == "closed" or err == "connection reset by peer"
end

-- A client of `addr` (default: the server's first listener) that sent a
-- good v1 header and got its on_connect line.
local function good_client(srv, addr)
  local c = srv:connect(addr)
  H.send(c, V1_GOOD)
  local t = info(c)
  assert(t.peer == "192.0.2.1:51234", "unexpected peer " .. tostring(t.peer))
  return c, t
end

-- Certificates: a CA, a server certificate for localhost/127.0.0.1 it
-- signed, a client certificate it signed (CN hotsock-client), and the
-- server certificate with its key in one file (as HAProxy's crt wants).
local function make_certs(dir)
  local cmds = {
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      .. " -subj /CN=hotsock-test-ca -keyout ca.key -out ca.pem",
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
      .. " -subj /CN=localhost -keyout key.pem -out req.csr",
    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf",
    "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      .. " -extfile ext.cnf -out cert.pem",
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
      .. " -subj /CN=hotsock-client -keyout client.key -out client.csr",
    "printf 'extendedKeyUsage=clientAuth\\n' > client.cnf",
    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
      .. " -extfile client.cnf -out client.pem",
    "cat cert.pem key.pem > combined.pem",
  }
  for _, c in ipairs(cmds) do
    local out, rc = sh("cd " .. q(dir) .. " && " .. c)
    assert(rc == 0, c .. "\n" .. out)
  end
end

---------------------------------------------------------------------------
-- background processes (HAProxy), stopped by PID
---------------------------------------------------------------------------


-- Start `cmd` in the background under `timeout`, output in files. Returns
-- {pid, out, err, dir}; pid is the timeout process's, which passes SIGTERM
-- on to the command.
local start_proc = H.spawn

local proc_exited = H.spawn_exited

local stop_procs = H.stop_all_spawned

-- A free TCP port on 127.0.0.1 (bound, read, released).
local free_port = H.free_port

local haproxy = require "haproxy_stats"
local haproxy_cmd, haproxy_stat = haproxy.cmd, haproxy.stat

-- Start HAProxy with `body` (frontends and backends) after a global and
-- defaults section of ours; wait until its stats socket answers (it binds
-- everything before).
local function start_haproxy(body)
  local d = H.tempdir()
  local sock = d .. "/admin.sock"
  local cfg = table.concat({
    "global",
    "  nbthread 1",
    "  stats socket " .. sock .. " level admin",
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    "  timeout client 10s",
    "  timeout server 10s",
    body,
  }, "\n") .. "\n"
  local f = assert(io.open(d .. "/haproxy.cfg", "w"))
  f:write(cfg)
  f:close()
  local p = start_proc(("%s -db -f %s"):format(q(HAPROXY), q(d .. "/haproxy.cfg")), 60)
  p.sock = sock
  p.cfg = cfg
  local ready = H.wait_until(function()
    if proc_exited(p) then return "exited" end
    local out = haproxy_cmd(p, "show info")
    return out and out:find("Pid:", 1, true) and "ready"
  end, 10, 0.05)
  assert(ready == "ready", "HAProxy did not start:\n" .. cfg .. "\n" .. (H.read_file(p.err) or ""))
  return p
end

-- The CONN tables a server logged.
local function logged_conns(srv)
  local list = {}
  for t in srv:stderr():gmatch("CONN (%b{})") do list[#list + 1] = decode("return " .. t) end
  return list
end

---------------------------------------------------------------------------

describe("PROXY protocol", function()
  local dir

  setup(function()
    dir = (sh("mktemp -d /tmp/hotsock-proxy.XXXXXX"):gsub("%s+$", ""))
    make_certs(dir)
  end)

  teardown(function()
    if dir and dir:match("^/tmp/hotsock%-proxy%.") then os.execute("rm -rf " .. q(dir)) end
  end)

  after_each(function()
    stop_procs()
    H.cleanup()
  end)

  local function f(name) return dir .. "/" .. name end

  -- A server whose module listens on one PROXY listener (or `listen`, Lua
  -- source of the listen value, with n listeners).
  local function start(listen, n, opts)
    opts = opts or {}
    opts.listen = false
    opts.expect_listeners = n or 1
    return H.start(script(listen or '{ {addr = "127.0.0.1:0", proxy_protocol = true} }'), opts)
  end

  describe("raw clients", function()
    it("v1 TCP4 (--proxy-protocol): conn.peer is the client's, conn.proxy the balancer and the destination", function()
      local srv = H.start(script("nil"), { listen = "127.0.0.1:0", args = { "--proxy-protocol" } })
      local c = srv:connect()
      local _, myport = c:getsockname()
      H.send(c, V1_GOOD)
      local t = info(c)
      assert.are.equal("192.0.2.1:51234", t.peer)
      assert.are.equal("192.0.2.1", t.peer_ip)
      assert.are.equal(51234, t.peer_port)
      assert.are.same({
        version = 1, ["local"] = false, peer = "127.0.0.1:" .. myport,
        dst = "198.51.100.7:443", dst_ip = "198.51.100.7", dst_port = 443,
      }, t.proxy)
      H.send(c, "hello\n")
      assert.are.equal("echo:hello", H.line(c))
      -- conn.proxy stays what the header said
      H.send(c, "AGAIN\n")
      assert.are.same(t, info(c))
      assert.truthy(srv:stderr():find("PROXY header", 1, true) == nil, srv:stderr())
      assert.are.equal(0, srv:stop())
    end)

    it("v1 TCP6 and ports 0 and 65535", function()
      local srv = start()
      local c = srv:connect()
      H.send(c, v1("TCP6 2001:db8::1 2001:db8:0:1::2 65535 0"))
      local t = info(c)
      assert.are.equal("[2001:db8::1]:65535", t.peer)
      assert.are.equal("2001:db8::1", t.peer_ip)
      assert.are.equal(65535, t.peer_port)
      assert.are.equal("[2001:db8:0:1::2]:0", t.proxy.dst)
      assert.are.equal("2001:db8:0:1::2", t.proxy.dst_ip)
      assert.are.equal(0, t.proxy.dst_port)
      assert.are.equal(1, t.proxy.version)
      assert.is_false(t.proxy["local"])
      assert.are.equal(0, srv:stop())
    end)

    it("v1 UNKNOWN (also a full 107-byte line) is local: conn.peer stays the socket's", function()
      local srv = start()
      local c = srv:connect()
      local _, myport = c:getsockname()
      H.send(c, "PROXY UNKNOWN\r\n")
      local t = info(c)
      assert.are.equal("127.0.0.1:" .. myport, t.peer)
      assert.are.equal("127.0.0.1", t.peer_ip)
      assert.are.equal(tonumber(myport), t.peer_port)
      assert.are.same({ version = 1, ["local"] = true, peer = "127.0.0.1:" .. myport }, t.proxy)
      -- "the rest of the line is to be ignored", up to the longest line
      local line = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535 "
      line = line .. ("x"):rep(107 - 2 - #line) .. "\r\n"
      assert.are.equal(107, #line)
      local c2 = srv:connect()
      H.send(c2, line .. "after\n")
      t = info(c2)
      assert.is_true(t.proxy["local"])
      assert.are.equal("echo:after", H.line(c2))
      assert.are.equal(0, srv:stop())
    end)

    it("v2 PROXY over IPv4 with ALPN, authority, unique id and an SSL TLV with sub-TLVs", function()
      local srv = start()
      local c = srv:connect()
      local _, myport = c:getsockname()
      local uid = "\0\1\2\255 id-" .. ("u"):rep(100) -- binary, 108 bytes
      local tlvs = tlv(0x04, "\0\0\0")                -- NOOP: ignored
        .. tlv(0x01, "h2")
        .. tlv(0x02, "example.test")
        .. tlv(0x05, uid)
        .. ssl_tlv(0x07, 0, tlv(0x21, "TLSv1.3") .. tlv(0x22, "ann")
          .. tlv(0x23, "TLS_AES_128_GCM_SHA256") .. tlv(0x24, "SHA256") .. tlv(0x25, "RSA2048")
          .. tlv(0x2f, "an unknown sub-TLV"))
        .. tlv(0xe0, "a custom TLV") -- ignored
      H.send(c, v2_tcp4("203.0.113.9", "198.51.100.7", 40000, 8443, tlvs))
      local t = info(c)
      assert.are.equal("203.0.113.9:40000", t.peer)
      assert.are.equal("203.0.113.9", t.peer_ip)
      assert.are.equal(40000, t.peer_port)
      assert.are.same({
        version = 2, ["local"] = false, peer = "127.0.0.1:" .. myport,
        dst = "198.51.100.7:8443", dst_ip = "198.51.100.7", dst_port = 8443,
        alpn = "h2", authority = "example.test", unique_id = uid,
        ssl = { client = 7, verified = true, version = "TLSv1.3", cn = "ann",
                cipher = "TLS_AES_128_GCM_SHA256", sig_alg = "SHA256", key_alg = "RSA2048" },
      }, t.proxy)
      H.send(c, "x\n")
      assert.are.equal("echo:x", H.line(c))
      assert.are.equal(0, srv:stop())
    end)

    it("v2 PROXY over IPv6, a unique id of exactly 128 bytes", function()
      local srv = start()
      local c = srv:connect()
      local uid = ("i"):rep(128)
      H.send(c, v2_tcp6("20010db8000000000000000000000001", "20010db8000000010000000000000002",
        51234, 443, tlv(0x05, uid)))
      local t = info(c)
      assert.are.equal("[2001:db8::1]:51234", t.peer)
      assert.are.equal("2001:db8::1", t.peer_ip)
      assert.are.equal("[2001:db8:0:1::2]:443", t.proxy.dst)
      assert.are.equal(uid, t.proxy.unique_id)
      assert.are.equal(0, srv:stop())
    end)

    it("v2 LOCAL (its TLVs ignored), UDP and unix families are local: conn.peer stays the socket's", function()
      local srv = start()
      local cases = {
        -- LOCAL, AF_UNSPEC, as HAProxy's health checks send it, with TLVs
        v2(0x20, 0x00, tlv(0x02, "health.example") .. ssl_tlv(0x01, 0, tlv(0x21, "TLSv1.2"))),
        -- LOCAL with addresses: they are ignored
        v2(0x20, 0x11, ip4("192.0.2.1") .. ip4("198.51.100.7") .. u16(1) .. u16(2)),
        -- PROXY over UDP/IPv4 and over a unix stream socket: not TCP
        v2(0x21, 0x12, ip4("192.0.2.1") .. ip4("198.51.100.7") .. u16(1) .. u16(2)),
        v2(0x21, 0x31, "/tmp/client.sock" .. ("\0"):rep(216 - 16)),
        -- AF_UNSPEC with PROXY
        v2(0x21, 0x00, ""),
      }
      for i, hdr in ipairs(cases) do
        local c = srv:connect()
        local _, myport = c:getsockname()
        H.send(c, hdr .. "data " .. i .. "\n")
        local t = info(c)
        assert.are.equal("127.0.0.1:" .. myport, t.peer, "case " .. i)
        assert.are.equal(tonumber(myport), t.peer_port, "case " .. i)
        assert.are.equal(2, t.proxy.version, "case " .. i)
        assert.is_true(t.proxy["local"], "case " .. i)
        assert.are.equal("127.0.0.1:" .. myport, t.proxy.peer, "case " .. i)
        assert.is_nil(t.proxy.dst, "case " .. i)
        assert.is_nil(t.proxy.dst_ip, "case " .. i)
        assert.is_nil(t.proxy.dst_port, "case " .. i)
        if i == 1 then
          -- LOCAL: the whole block is discarded, TLVs included (the spec's rule)
          assert.is_nil(t.proxy.authority)
          assert.is_nil(t.proxy.ssl)
        end
        assert.are.equal("echo:data " .. i, H.line(c))
      end
      local c = srv:connect()
      H.send(c, V1_GOOD)
      info(c)
      local s = stats(c)
      assert.are.equal(0, s.proxy_failures)
      assert.are.equal(#cases + 1, s.connects)
      assert.are.equal(0, srv:stop())
    end)

    -- PROXY protocol spec: <verify> "will be zero if the client presented a
    -- certificate and it was successfully verified, and non-zero otherwise";
    -- HAProxy leaves it 0 when there was no certificate (or no TLS at all),
    -- and says so in the client bits (PP2_CLIENT_CERT_CONN 2 / _SESS 4).
    it("conn.proxy.ssl.verified is true only for a client certificate that was verified", function()
      local srv = start()
      local function ssl_of(client, verify)
        local c = srv:connect()
        H.send(c, v2_tcp4("192.0.2.1", "198.51.100.7", 1000, 443, ssl_tlv(client, verify)))
        return info(c).proxy.ssl
      end
      assert.are.same({ client = 7, verified = true }, ssl_of(7, 0))  -- certificate, verified
      assert.are.same({ client = 7, verified = false }, ssl_of(7, 1)) -- certificate, not verified
      assert.are.same({ client = 1, verified = false }, ssl_of(1, 0)) -- TLS, no certificate
      assert.are.same({ client = 0, verified = false }, ssl_of(0, 0)) -- no TLS at all
      assert.are.equal(0, srv:stop())
    end)

    it("waits for a header split across sends (and one byte at a time), then frames what follows", function()
      local srv = start()
      -- v1 in three pieces with pauses: nothing reaches the script before the CRLF
      local c = srv:connect()
      c:setoption("tcp-nodelay", true)
      H.send(c, "PROXY TCP4 19")
      H.sleep(0.05)
      H.send(c, "2.0.2.1 198.51.100.7 512")
      assert.is_true(H.quiet(c, 0.2)) -- no on_connect line yet
      H.send(c, "34 443\r")
      H.sleep(0.05)
      H.send(c, "\nfirst li")
      local t = info(c)
      assert.are.equal("192.0.2.1:51234", t.peer)
      H.send(c, "ne\n")
      assert.are.equal("echo:first line", H.line(c))
      -- v2 with TLVs in four pieces, cut inside the signature, the length and a TLV
      local hdr = v2_tcp4("203.0.113.9", "198.51.100.7", 40000, 8443,
        tlv(0x02, "split.example") .. tlv(0x01, "http/1.1"))
      local c2 = srv:connect()
      c2:setoption("tcp-nodelay", true)
      local cuts = { 5, 15, 33, #hdr }
      local from = 1
      for i, to in ipairs(cuts) do
        H.send(c2, hdr:sub(from, to))
        from = to + 1
        if i < #cuts then
          H.sleep(0.05)
          assert.is_true(H.quiet(c2, 0.05), "on_connect before the header was whole")
        end
      end
      t = info(c2)
      assert.are.equal("203.0.113.9:40000", t.peer)
      assert.are.equal("split.example", t.proxy.authority)
      assert.are.equal("http/1.1", t.proxy.alpn)
      -- one byte at a time, v1 and v2
      local c3 = srv:connect()
      H.send_bytewise(c3, v1("TCP4 192.0.2.3 198.51.100.7 3333 443") .. "b1\n")
      assert.are.equal("192.0.2.3:3333", info(c3).peer)
      assert.are.equal("echo:b1", H.line(c3))
      local c4 = srv:connect()
      H.send_bytewise(c4, v2_tcp4("192.0.2.4", "198.51.100.7", 4444, 443, tlv(0x05, "uid-4")) .. "b2\n")
      t = info(c4)
      assert.are.equal("192.0.2.4:4444", t.peer)
      assert.are.equal("uid-4", t.proxy.unique_id)
      assert.are.equal("echo:b2", H.line(c4))
      H.send(c4, "STATS\n")
      assert.are.equal(0, info(c4).proxy_failures)
      assert.are.equal(0, srv:stop())
    end)

    it("takes a v2 header of the longest length (65535 bytes after the first 16), sent in pieces", function()
      local srv = start()
      local c = srv:connect()
      c:setoption("tcp-nodelay", true)
      local hdr = v2_tcp4("192.0.2.9", "198.51.100.7", 9999, 443,
        tlv(0x02, "big.example") .. tlv(0x04, ("n"):rep(65535 - 12 - 14 - 3)))
      assert.are.equal(16 + 65535, #hdr)
      for i = 1, #hdr, 4096 do H.send(c, hdr:sub(i, i + 4095)) end
      H.send(c, "after the big one\n")
      local t = info(c)
      assert.are.equal("192.0.2.9:9999", t.peer)
      assert.are.equal("big.example", t.proxy.authority)
      assert.are.equal("echo:after the big one", H.line(c))
      assert.are.equal(0, srv:stop())
    end)

    it("frames the bytes that came in the same send as the header", function()
      local srv = start()
      local c = srv:connect()
      H.send(c, V1_GOOD .. "one\ntwo\nthr")
      assert.are.equal("192.0.2.1:51234", info(c).peer)
      assert.are.equal("echo:one", H.line(c))
      assert.are.equal("echo:two", H.line(c))
      H.send(c, "ee\n")
      assert.are.equal("echo:three", H.line(c))
      local c2 = srv:connect()
      H.send(c2, v2_tcp4("192.0.2.2", "198.51.100.7", 2222, 443, tlv(0x02, "a.example")) .. "PING\nfour\n")
      assert.are.equal("192.0.2.2:2222", info(c2).peer)
      assert.are.equal("PONG", H.line(c2))
      assert.are.equal("echo:four", H.line(c2))
      -- a line that looks like a header after the header is only data
      local c3 = srv:connect()
      H.send(c3, V1_GOOD .. V1_GOOD)
      info(c3)
      assert.are.equal("echo:" .. V1_GOOD:sub(1, -3), H.line(c3))
      assert.are.equal(0, srv:stop())
    end)

    it("starts a coroutine (handle) only after the header, with the bytes that followed it", function()
      local srv = H.start([[
return {
  listen = { {addr = "127.0.0.1:0", proxy_protocol = true} },
  handle = function(conn)
    conn:send(conn.peer, " ", conn.proxy.dst, "\n")
    while true do
      local line = conn:receive("*l")
      if not line then return end
      conn:send("got ", line, "\n")
    end
  end,
}
]], { listen = false })
      local c = srv:connect()
      H.send(c, v1("TCP4 192.0.2.1 198.51.100.7 51234 443") .. "a\nb\n")
      assert.are.equal("192.0.2.1:51234 198.51.100.7:443", H.line(c))
      assert.are.equal("got a", H.line(c))
      assert.are.equal("got b", H.line(c))
      local c2 = srv:connect()
      H.send(c2, "PROXY TCP4 192.0.2.2 198.51.100.7 ")
      assert.is_true(H.quiet(c2, 0.1))
      H.send(c2, "2222 443\r\nc\n")
      assert.are.equal("192.0.2.2:2222 198.51.100.7:443", H.line(c2))
      assert.are.equal("got c", H.line(c2))
      assert.are.equal(0, srv:stop())
    end)

    it("closes each malformed header at once, counts it, never tells the script, and a good client goes on", function()
      local addr4 = ip4("192.0.2.1") .. ip4("198.51.100.7") .. u16(51234) .. u16(443)
      local BAD = {
        { "an HTTP request", "GET / HTTP/1.0\r\n\r\n", "not a PROXY protocol header" },
        { "a v2 signature with one byte wrong", "\r\n\r\n\0\r\nQUIT\r\x21\x11" .. u16(12) .. addr4,
          "not a PROXY protocol header" },
        { "a lower-case v1 signature", "proxy TCP4 192.0.2.1 198.51.100.7 51234 443\r\n",
          "not a PROXY protocol header" },
        { "v1 ending in a bare LF", "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\n",
          "PROXY v1 line does not end in CRLF" },
        { "v1 without CRLF over 107 bytes", "PROXY UNKNOWN " .. ("x"):rep(100),
          "PROXY v1 line longer than 107 bytes" },
        { "v1 of 108 bytes with its CRLF", "PROXY UNKNOWN " .. ("x"):rep(92) .. "\r\n",
          "PROXY v1 line longer than 107 bytes" },
        { "v1 protocol TCP5", v1("TCP5 192.0.2.1 198.51.100.7 51234 443"),
          "PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN" },
        { "v1 too few fields", v1("TCP4 192.0.2.1 198.51.100.7 51234"), "PROXY v1 line has too few fields" },
        { "v1 too many fields", v1("TCP4 192.0.2.1 198.51.100.7 51234 443 9"),
          "PROXY v1 line has too many fields" },
        { "v1 IPv4 address out of range", v1("TCP4 192.0.2.256 198.51.100.7 51234 443"),
          "PROXY v1 address is not a valid address of its family" },
        { "v1 TCP4 with IPv6 addresses", v1("TCP4 2001:db8::1 2001:db8::2 51234 443"),
          "PROXY v1 address is not a valid address of its family" },
        { "v1 TCP6 with IPv4 addresses", v1("TCP6 192.0.2.1 198.51.100.7 51234 443"),
          "PROXY v1 address is not a valid address of its family" },
        { "v1 host name for an address", v1("TCP4 localhost 198.51.100.7 51234 443"),
          "PROXY v1 address is not a valid address of its family" },
        { "v1 port 65536", v1("TCP4 192.0.2.1 198.51.100.7 65536 443"),
          "PROXY v1 port is not a number from 0 to 65535" },
        { "v1 port with a leading zero", v1("TCP4 192.0.2.1 198.51.100.7 51234 0443"),
          "PROXY v1 port is not a number from 0 to 65535" },
        { "v1 negative port", v1("TCP4 192.0.2.1 198.51.100.7 -1 443"),
          "PROXY v1 port is not a number from 0 to 65535" },
        { "v2 version 3", v2(0x31, 0x11, addr4), "PROXY v2 version is not 2" },
        { "v2 version 1", v2(0x11, 0x11, addr4), "PROXY v2 version is not 2" },
        { "v2 command 2", v2(0x22, 0x11, addr4), "PROXY v2 command is neither LOCAL nor PROXY" },
        { "v2 address family 4", v2(0x21, 0x41, addr4), "PROXY v2 address family is unknown" },
        { "v2 transport 3", v2(0x21, 0x13, addr4), "PROXY v2 transport is unknown" },
        { "v2 IPv4 addresses cut short", v2(0x21, 0x11, ip4("192.0.2.1") .. ip4("198.51.100.7")),
          "PROXY v2 addresses run past the header" },
        { "v2 IPv6 addresses in an IPv4-sized block", v2(0x21, 0x21, addr4),
          "PROXY v2 addresses run past the header" },
        { "v2 TLV running past the length", v2(0x21, 0x11, addr4 .. "\x02" .. u16(20) .. "short"),
          "PROXY v2 TLV runs past the header" },
        { "v2 TLV cut short", v2(0x21, 0x11, addr4 .. "\x02\0"), "PROXY v2 TLV is cut short" },
        { "v2 SSL TLV under 5 bytes", v2(0x21, 0x11, addr4 .. tlv(0x20, "\1\0\0")),
          "PROXY v2 SSL TLV is cut short" },
        { "v2 SSL sub-TLV running past the SSL TLV",
          v2(0x21, 0x11, addr4 .. tlv(0x20, "\1" .. u32(0) .. "\x21" .. u16(10) .. "TLS")
            .. tlv(0x04, "padding padding")),
          "PROXY v2 TLV runs past the header" },
        { "v2 unique id of 129 bytes", v2(0x21, 0x11, addr4 .. tlv(0x05, ("u"):rep(129))),
          "PROXY v2 unique id is longer than 128 bytes" },
      }
      local srv = start()
      local good = good_client(srv)
      -- a client that has sent half a header stays pending meanwhile
      local half = srv:connect()
      H.send(half, "PROXY TCP4 192.0.2.")
      for i, case in ipairs(BAD) do
        local c = srv:connect()
        c:send(case[2]) -- the server may reset before all of it is taken
        local err, rest = H.read_to_close(c, 3)
        assert.truthy(closed_ok(err), case[1] .. ": " .. tostring(err))
        assert.are.equal("", rest, case[1])
        c:close()
        H.send(good, "still here " .. i .. "\n")
        assert.are.equal("echo:still here " .. i, H.line(good), case[1])
      end
      local log = srv:stderr()
      for _, case in ipairs(BAD) do
        assert.truthy(log:find("PROXY header from 127.0.0.1:%d+ refused: " .. case[3]:gsub("%p", "%%%0")
          .. "; closing"), case[1] .. ": no log line saying " .. case[3])
      end
      assert.are.equal(#BAD, srv:count_log("PROXY header from 127%.0%.0%.1:%d+ refused: "))
      -- the half header, cut short by the client's FIN
      half:shutdown("send")
      local err = H.read_to_close(half, 3)
      assert.truthy(closed_ok(err), err)
      srv:expect_log("PROXY header from 127%.0%.0%.1:%d+ cut short; closing")
      -- a new good client, the counters, and the script never heard of the bad ones
      local good2 = good_client(srv)
      H.send(good2, "hi\n")
      assert.are.equal("echo:hi", H.line(good2))
      local s = stats(good)
      assert.are.equal(#BAD + 1, s.proxy_failures)
      assert.are.equal(2, s.connects)
      assert.are.equal(0, s.closes)
      assert.are.equal(0, srv:stop())
    end)

    it("does not count a connection that closes without sending a byte", function()
      local srv = start(nil, 1, { args = { "--log-level", "debug" } })
      local bare = srv:connect()
      bare:close()
      srv:expect_log("conn %d+: closed: eof")
      local good = good_client(srv)
      local s = stats(good)
      assert.are.equal(0, s.proxy_failures)
      assert.are.equal(1, s.connects)
      assert.are.equal(0, s.closes) -- the script never heard of it
      assert.are.equal(0, srv:stop())
    end)

    it("cuts a header that has not come by first_byte, counted as a timeout and a PROXY failure", function()
      local srv = H.start(script('{ {addr = "127.0.0.1:0", proxy_protocol = true} }'),
        { listen = false, args = { "--timeout", "first_byte=300" } })
      local slow = srv:connect()
      H.send(slow, "PROXY TCP4 192.0.2.1 ") -- and no more
      local silent = srv:connect()        -- sends nothing at all
      local err, rest = H.read_to_close(slow, 5)
      assert.truthy(closed_ok(err), err)
      assert.are.equal("", rest)
      err, rest = H.read_to_close(silent, 5)
      assert.truthy(closed_ok(err), err)
      assert.are.equal("", rest)
      srv:expect_log("PROXY header from 127%.0%.0%.1:%d+ timed out; closing")
      assert.truthy(H.wait_until(function()
        return srv:count_log("PROXY header from 127%.0%.0%.1:%d+ timed out; closing") == 2
      end, 3), srv:stderr())
      local good = good_client(srv)
      local s = stats(good)
      assert.are.equal(2, s.proxy_failures)
      assert.are.equal(2, s.timeouts)
      assert.are.equal(1, s.connects)
      srv:signal("USR2") -- the counters' log line has it too
      assert.truthy(srv:wait_log("stats .* proxy_failures=2", 5), srv:stderr())
      assert.are.equal(0, srv:stop())
    end)

    it("leaves conn.proxy nil on a plain listener beside a PROXY one in the same module", function()
      local srv = start([[{
    {addr = "127.0.0.1:0", proxy_protocol = true},
    "127.0.0.1:0",
    {addr = "127.0.0.1:0", proxy_protocol = false},
  }]], 3)
      local a = srv.addrs -- in the module's order
      assert.are.equal(3, #a)
      for i = 2, 3 do
        local c = srv:connect(a[i])
        local _, myport = c:getsockname()
        local t = info(c) -- on_connect at once: no header awaited
        assert.are.equal("127.0.0.1:" .. myport, t.peer)
        assert.are.equal(a[i], t.listener)
        assert.is_nil(t.proxy)
        -- a PROXY line there is just data
        H.send(c, V1_GOOD)
        assert.are.equal("echo:" .. V1_GOOD:sub(1, -3), H.line(c))
        H.send(c, "AGAIN\n")
        assert.is_nil(info(c).proxy)
      end
      local c, t = good_client(srv, a[1])
      assert.are.equal(a[1], t.listener)
      assert.are.equal(1, t.proxy.version)
      -- and a client without a header on the PROXY listener is refused
      local bad = srv:connect(a[1])
      H.send(bad, "hello\n")
      assert.truthy(closed_ok((H.read_to_close(bad, 3))))
      assert.are.equal(1, stats(c).proxy_failures)
      assert.are.equal(0, srv:stop())
    end)

    it("refuses a proxy_protocol that is not a boolean", function()
      local p = H.write_script([[
return {
  listen = { {addr = "127.0.0.1:0", proxy_protocol = "yes"} },
  on_message = function() end,
}
]])
      local rc, _, err = H.run({ "--check", p })
      assert.are.equal(2, rc)
      assert.truthy(err:find("listen[1].proxy_protocol must be true or false", 1, true), err)
    end)

    it("reads the header on a unix listener too: conn.peer is the client's from the header", function()
      local path = H.tempdir() .. "/hs.sock"
      local srv = start(('{ {addr = "unix:%s", proxy_protocol = true} }'):format(path))
      local c = srv:connect("unix:" .. path)
      H.send(c, V1_GOOD .. "u\n")
      local t = info(c)
      assert.are.equal("echo:u", H.line(c))
      assert.are.equal(1, t.proxy.version)
      assert.are.equal("198.51.100.7:443", t.proxy.dst)
      assert.are.equal("192.0.2.1:51234", t.peer)
      assert.are.equal("192.0.2.1", t.peer_ip)
      assert.are.equal(51234, t.peer_port)
      -- without a header conn.peer is the socket's path: the balancer's
      -- side here
      assert.are.equal(path, t.proxy.peer)
      assert.are.equal(0, srv:stop())
    end)

    describe("with TLS on the same listener", function()
      local function tls_listen()
        return ('{ {addr = "127.0.0.1:0", proxy_protocol = true, tls = {cert = %q, key = %q}} }')
          :format(f("cert.pem"), f("key.pem"))
      end

      -- A LuaSec client: the header in plaintext, then the handshake.
      local function tls_client(srv, header)
        local ssl = require "ssl"
        local c = srv:connect()
        local _, myport = c:getsockname()
        if header then H.send(c, header) end
        local s = assert(ssl.wrap(c, { mode = "client", protocol = "any", verify = "none" }))
        s:settimeout(5)
        local ok, err = s:dohandshake()
        if not ok then s:close() return nil, err end
        return s, tonumber(myport)
      end

      it("reads the header in plaintext, then does the TLS handshake", function()
        if not have_luasec() then return pending("LuaSec (lua-sec) is not installed") end
        local srv = start(tls_listen())
        local s, myport = tls_client(srv, V1_GOOD)
        assert.truthy(s)
        local t = info(s)
        assert.are.equal("192.0.2.1:51234", t.peer)
        assert.truthy(t.tls and t.tls:match("^TLSv1"), t.tls)
        assert.are.equal("127.0.0.1:" .. myport, t.proxy.peer)
        H.send(s, "over tls\n")
        assert.are.equal("echo:over tls", H.line(s))
        -- v2, LOCAL
        local s2 = tls_client(srv, v2(0x20, 0x00, ""))
        t = info(s2)
        assert.is_true(t.proxy["local"])
        assert.truthy(t.tls)
        -- no header: a PROXY failure, not a handshake failure
        local bad = srv:connect()
        local ssl = require "ssl"
        local w = assert(ssl.wrap(bad, { mode = "client", protocol = "any", verify = "none" }))
        w:settimeout(3)
        assert.falsy((w:dohandshake()))
        w:close()
        srv:expect_log("PROXY header from 127%.0%.0%.1:%d+ refused: not a PROXY protocol header")
        -- a header, then garbage: a handshake failure
        local bad2 = srv:connect()
        H.send(bad2, V1_GOOD .. "GET / HTTP/1.0\r\n\r\n")
        assert.truthy(closed_ok((H.read_to_close(bad2, 3))))
        srv:expect_log("TLS handshake from 192%.0%.2%.1:51234 failed")
        local st = stats(s)
        assert.are.equal(1, st.proxy_failures)
        assert.are.equal(1, st.tls_handshake_failures)
        assert.are.equal(2, st.tls_handshakes)
        s:close()
        s2:close()
        assert.are.equal(0, srv:stop())
      end)

      it("applies --proxy-protocol to a tls:// listener on the command line", function()
        if not have_luasec() then return pending("LuaSec (lua-sec) is not installed") end
        local srv = H.start(script("nil"), { listen = "tls://127.0.0.1:0",
          args = { "--tls-cert", f("cert.pem"), "--tls-key", f("key.pem"), "--proxy-protocol" } })
        local s = assert(tls_client(srv, v2_tcp6("20010db8000000000000000000000001",
          "20010db8000000000000000000000002", 443, 8443)))
        local t = info(s)
        assert.are.equal("[2001:db8::1]:443", t.peer)
        assert.truthy(t.tls)
        s:close()
        assert.are.equal(0, srv:stop())
      end)

      -- A balancer's plain TCP health check (HAProxy's `check` with
      -- `check-send-proxy` and no `check-ssl`) sends a LOCAL header and
      -- closes: no TLS byte was sent, as with a bare connect-and-close.
      it("does not count a header followed by a close as a failed TLS handshake", function()
        if not have_luasec() then return pending("LuaSec (lua-sec) is not installed") end
        local srv = start(tls_listen(), 1, { args = { "--log-level", "debug" } })
        local probe = srv:connect()
        H.send(probe, v2(0x20, 0x00, ""))
        probe:close()
        local bare = srv:connect() -- a bare connect-and-close, for comparison
        bare:close()
        -- both closes seen ("conn N: closed: REASON" at debug level)
        srv:expect_log("PROXY v2: ")
        assert.truthy(H.wait_until(function() return srv:count_log("conn %d+: closed: ") >= 2 end, 3),
          srv:stderr())
        local s = tls_client(srv, V1_GOOD)
        info(s)
        local st = stats(s)
        assert.are.equal(0, st.proxy_failures)
        assert.are.equal(0, st.tls_handshake_failures, srv:stderr())
        s:close()
        assert.are.equal(0, srv:stop())
      end)
    end)
  end)

  -------------------------------------------------------------------------

  describe("behind HAProxy", function()
    local function have_haproxy()
      local f = io.open(HAPROXY, "rb")
      if f then f:close() return true end
      return false
    end

    local function hp_port(srv, i) return tonumber(srv.addrs[i or 1]:match(":(%d+)$")) end

    it("send-proxy (v1): the script sees the client's address and port, conn.proxy.peer HAProxy's side", function()
      if not have_haproxy() then return pending("haproxy is not installed") end
      local srv = start()
      local fp = free_port()
      start_haproxy(([[
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server s1 127.0.0.1:%d send-proxy source 127.0.0.2
]]):format(fp, hp_port(srv)))
      local clients = {}
      for i = 1, 3 do
        local c = assert(H.connect_addr("127.0.0.1:" .. fp))
        local _, myport = c:getsockname()
        clients[i] = { c = c, port = tonumber(myport) }
      end
      for i, cl in ipairs(clients) do
        local t = info(cl.c)
        assert.are.equal("127.0.0.1:" .. cl.port, t.peer)
        assert.are.equal("127.0.0.1", t.peer_ip)
        assert.are.equal(cl.port, t.peer_port)
        assert.are.equal(1, t.proxy.version)
        assert.is_false(t.proxy["local"])
        assert.are.equal("127.0.0.1:" .. fp, t.proxy.dst)
        assert.are.equal(fp, t.proxy.dst_port)
        assert.truthy(t.proxy.peer:match("^127%.0%.0%.2:%d+$"), t.proxy.peer)
        H.send(cl.c, "through haproxy " .. i .. "\n")
        assert.are.equal("echo:through haproxy " .. i, H.line(cl.c))
      end
      for _, cl in ipairs(clients) do cl.c:close() end
      assert.are.equal(0, srv:stop())
    end)

    it("send-proxy-v2 with proxy-v2-options authority,unique-id,ssl to a plain TCP client", function()
      if not have_haproxy() then return pending("haproxy is not installed") end
      local srv = start()
      local fp = free_port()
      start_haproxy(([[
frontend fe
  bind 127.0.0.1:%d
  unique-id-format hs-%%ci-%%cp
  default_backend be
backend be
  server s1 127.0.0.1:%d send-proxy-v2 proxy-v2-options authority,unique-id,ssl source 127.0.0.2
]]):format(fp, hp_port(srv)))
      local c = assert(H.connect_addr("127.0.0.1:" .. fp))
      local _, myport = c:getsockname()
      local t = info(c)
      assert.are.equal("127.0.0.1:" .. myport, t.peer)
      assert.are.equal(2, t.proxy.version)
      assert.is_false(t.proxy["local"])
      assert.are.equal("127.0.0.1:" .. fp, t.proxy.dst)
      assert.truthy(t.proxy.peer:match("^127%.0%.0%.2:%d+$"), t.proxy.peer)
      assert.are.equal("hs-127.0.0.1-" .. myport, t.proxy.unique_id)
      assert.is_nil(t.proxy.authority) -- no TLS in front: no SNI to pass on
      assert.is_nil(t.proxy.alpn)
      assert.are.equal(0, t.proxy.ssl.client) -- the SSL TLV says: not TLS
      assert.is_nil(t.proxy.ssl.version)
      H.send(c, "v2\n")
      assert.are.equal("echo:v2", H.line(c))
      c:close()
      assert.are.equal(0, srv:stop())
    end)

    describe("terminating TLS in tcp mode", function()
      local function setup_tls_front(srv)
        local fp = free_port()
        start_haproxy(([[
frontend fe
  bind 127.0.0.1:%d ssl crt %s alpn h2,http/1.1 verify optional ca-file %s
  unique-id-format hs-%%ci-%%cp
  default_backend be
backend be
  server s1 127.0.0.1:%d send-proxy-v2 proxy-v2-options authority,unique-id,ssl,cert-cn,ssl-cipher,cert-sig,cert-key source 127.0.0.2
]]):format(fp, f("combined.pem"), f("ca.pem"), hp_port(srv)))
        return fp
      end

      local function client(fp, cert)
        local ssl = require "ssl"
        local c = assert(H.connect_addr("127.0.0.1:" .. fp))
        local _, myport = c:getsockname()
        local params = { mode = "client", protocol = "any", verify = "none", alpn = "http/1.1" }
        if cert then
          params.certificate = f("client.pem")
          params.key = f("client.key")
        end
        local s = assert(ssl.wrap(c, params))
        s:sni("example.test")
        s:settimeout(5)
        assert(s:dohandshake())
        return s, tonumber(myport)
      end

      it("passes SNI as authority, ALPN, a unique id and the client certificate in the SSL TLV", function()
        if not have_haproxy() then return pending("haproxy is not installed") end
        if not have_luasec() then return pending("LuaSec (lua-sec) is not installed") end
        local srv = start()
        local fp = setup_tls_front(srv)
        local s, myport = client(fp, true)
        local t = info(s)
        assert.are.equal("127.0.0.1:" .. myport, t.peer)
        assert.is_nil(t.tls) -- HAProxy decrypted it; the script sees plaintext
        local p = t.proxy
        assert.are.equal(2, p.version)
        assert.are.equal("example.test", p.authority)
        assert.are.equal("http/1.1", p.alpn)
        assert.are.equal("hs-127.0.0.1-" .. myport, p.unique_id)
        assert.are.equal(7, p.ssl.client) -- SSL, a certificate on this connection and in the session
        assert.is_true(p.ssl.verified)
        assert.are.equal("hotsock-client", p.ssl.cn)
        assert.truthy(p.ssl.version and p.ssl.version:match("^TLSv1%.[23]$"), p.ssl.version)
        assert.truthy(p.ssl.cipher and #p.ssl.cipher > 0)
        assert.truthy(p.ssl.sig_alg and #p.ssl.sig_alg > 0)
        assert.truthy(p.ssl.key_alg and #p.ssl.key_alg > 0)
        H.send(s, "decrypted\n")
        assert.are.equal("echo:decrypted", H.line(s))
        s:close()
        assert.are.equal(0, srv:stop())
      end)

      it("does not show a TLS client without a certificate as verified", function()
        if not have_haproxy() then return pending("haproxy is not installed") end
        if not have_luasec() then return pending("LuaSec (lua-sec) is not installed") end
        local srv = start()
        local fp = setup_tls_front(srv)
        local s = client(fp, false)
        local p = info(s).proxy
        assert.are.equal("example.test", p.authority)
        assert.are.equal(1, p.ssl.client) -- SSL, no certificate
        assert.is_nil(p.ssl.cn)
        assert.is_false(p.ssl.verified)
        s:close()
        assert.are.equal(0, srv:stop())
      end)
    end)

    it("health checks with check-send-proxy: v2 arrives as LOCAL, v1 with HAProxy's own addresses; both answered", function()
      if not have_haproxy() then return pending("haproxy is not installed") end
      for _, v in ipairs({ { opt = "send-proxy-v2", version = 2 }, { opt = "send-proxy", version = 1 } }) do
        local srv = start()
        local hap = start_haproxy(([[
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  option tcp-check
  tcp-check send PING\r\n
  tcp-check expect string PONG
  server s1 127.0.0.1:%d %s check check-send-proxy inter 200 source 127.0.0.2
]]):format(free_port(), hp_port(srv), v.opt))
        local ok = H.wait_until(function()
          local row = haproxy_stat(hap)["be/s1"]
          return row and row.check_status == "L7OK" and srv:count_log("CONN {") >= 2 and row
        end, 10, 0.05)
        assert.truthy(ok, "no passing check:\n" .. srv:stderr():sub(-2000) .. (H.read_file(hap.err) or ""))
        assert.are.equal("UP", ok.status)
        local checks = logged_conns(srv)
        assert.truthy(#checks >= 2)
        for _, t in ipairs(checks) do
          assert.are.equal(v.version, t.proxy.version)
          assert.truthy(t.peer:match("^127%.0%.0%.2:%d+$"), t.peer)
          if v.version == 2 then
            assert.is_true(t.proxy["local"])
            assert.are.equal(t.peer, t.proxy.peer) -- LOCAL: the socket's own peer
            assert.is_nil(t.proxy.dst)
          else
            -- v1 has no LOCAL: HAProxy writes the check connection's own
            -- addresses, so the client is HAProxy itself
            assert.is_false(t.proxy["local"])
            assert.are.equal(t.peer, t.proxy.peer)
            assert.are.equal("127.0.0.1:" .. hp_port(srv), t.proxy.dst)
          end
        end
        stop_procs()
        assert.are.equal(0, srv:stop())
      end
    end)

    it("a TLS listener behind send-proxy-v2 (TLS passed through) works with openssl s_client; check-ssl checks arrive as LOCAL", function()
      if not have_haproxy() then return pending("haproxy is not installed") end
      local srv = start(('{ {addr = "127.0.0.1:0", proxy_protocol = true, tls = {cert = %q, key = %q}} }')
        :format(f("cert.pem"), f("key.pem")))
      local fp = free_port()
      local hap = start_haproxy(([[
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server s1 127.0.0.1:%d send-proxy-v2 check check-ssl verify none check-send-proxy inter 200 source 127.0.0.2
]]):format(fp, hp_port(srv)))
      local cmd = ("(printf 'hello\\nSTATS\\n'; sleep 0.5) | timeout 10 openssl s_client -connect 127.0.0.1:%d"
        .. " -servername localhost -CAfile %s -verify_return_error -quiet -no_ign_eof 2>/dev/null"):format(fp, q(f("ca.pem")))
      local pf = assert(io.popen(cmd, "r"))
      local out = pf:read("a")
      pf:close()
      local first, echo, st = out:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n")
      assert.truthy(first, out)
      local t = decode(first)
      assert.are.equal("127.0.0.1", t.peer_ip)
      assert.truthy(t.tls and t.tls:match("^TLSv1"), t.tls)
      assert.are.equal(2, t.proxy.version)
      assert.is_false(t.proxy["local"])
      assert.are.equal("127.0.0.1:" .. fp, t.proxy.dst)
      assert.truthy(t.proxy.peer:match("^127%.0%.0%.2:%d+$"), t.proxy.peer)
      assert.are.equal("echo:hello", echo)
      local s = decode(st)
      assert.are.equal(0, s.proxy_failures)
      assert.are.equal(0, s.tls_handshake_failures)
      -- the health checks: a LOCAL header, then a TLS handshake
      local ok = H.wait_until(function()
        local row = haproxy_stat(hap)["be/s1"]
        if not (row and row.check_status == "L6OK") then return nil end
        for _, c in ipairs(logged_conns(srv)) do
          if c.proxy["local"] and c.tls then return c end
        end
      end, 10, 0.05)
      assert.truthy(ok, "no LOCAL check over TLS:\n" .. srv:stderr():sub(-2000))
      assert.are.equal(ok.peer, ok.proxy.peer)
      assert.falsy(srv:stderr():find("TLS handshake from .* failed"), srv:stderr())
      assert.are.equal(0, srv:stop())
    end)

    it("send-proxy to a unix listener: the script sees the client's address", function()
      if not have_haproxy() then return pending("haproxy is not installed") end
      local path = H.tempdir() .. "/hs.sock"
      local srv = start(('{ {addr = "unix:%s", proxy_protocol = true} }'):format(path))
      local fp = free_port()
      start_haproxy(([[
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  server s1 unix@%s send-proxy
]]):format(fp, path))
      local c = assert(H.connect_addr("127.0.0.1:" .. fp))
      local _, myport = c:getsockname()
      local t = info(c)
      assert.are.equal("127.0.0.1:" .. fp, t.proxy.dst)
      H.send(c, "u\n")
      assert.are.equal("echo:u", H.line(c))
      assert.are.equal("127.0.0.1:" .. myport, t.peer)
      assert.are.equal(tonumber(myport), t.peer_port)
      c:close()
      assert.are.equal(0, srv:stop())
    end)
  end)
end)
