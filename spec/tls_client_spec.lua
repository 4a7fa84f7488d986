-- spec/tls_client_spec.lua: outbound TLS (hs.connect with tls = ...) and
-- STARTTLS (conn:starttls), driven by real peers: openssl s_server as the
-- TLS server hotsock dials, LuaSec (require "ssl") as the client that
-- upgrades a plain connection, plain LuaSocket listeners that never answer,
-- and hotsock talking to itself for the client side of STARTTLS.
-- Certificates are made at test time with the openssl command in a temp
-- dir; no key is committed. Every process started here is stopped by its
-- PID in after_each.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local q = H.quote

local sh = H.sh

-- A CA and what it signed: a server certificate for localhost and
-- 127.0.0.1, one for the name localhost only (no IP), one for other.test,
-- and a client certificate; plus a self-signed certificate for localhost
-- and 127.0.0.1.
local function make_certs(dir)
  local function signed(name, cn, san)
    return {
      ("openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=%s"
        .. " -keyout %s.key -out %s.csr"):format(cn, name, name),
      ("printf '%s\\n' > %s.cnf"):format(san, name),
      ("openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        .. " -extfile %s.cnf -out %s.pem"):format(name, name, name),
    }
  end
  local cmds = {
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      .. " -subj /CN=hotsock-test-ca -keyout ca.key -out ca.pem",
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
      .. " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
      .. " -keyout self.key -out self.pem",
  }
  local function add(list) for _, c in ipairs(list) do cmds[#cmds + 1] = c end end
  add(signed("cert", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1"))
  add(signed("dns", "localhost", "subjectAltName=DNS:localhost"))
  add(signed("other", "other.test", "subjectAltName=DNS:other.test"))
  add(signed("client", "hotsock-client", "extendedKeyUsage=clientAuth"))
  for _, c in ipairs(cmds) do
    local out, rc = sh("cd " .. q(dir) .. " && " .. c)
    assert(rc == 0, c .. "\n" .. out)
  end
end

---------------------------------------------------------------------------
-- background processes (openssl s_server), stopped by PID
---------------------------------------------------------------------------


-- Start `cmd` (a shell command line) in the background under `timeout`, its
-- output in files. Returns {pid, out, err, rc}; pid is the timeout
-- process's, which passes SIGTERM on to the command.
local start_proc = H.spawn

local proc_exited = H.spawn_exited

local stop_procs = H.stop_all_spawned

-- openssl s_server on 127.0.0.1, a free port, answering each line with
-- the line reversed (-rev). Returns the process with .port.
local function s_server(cert, key, extra)
  local p = start_proc(("openssl s_server -accept 127.0.0.1:0 -cert %s -key %s -rev %s")
    :format(q(cert), q(key), extra or ""))
  p.port = H.wait_until(function()
    local s = H.read_file(p.out)
    return s and tonumber(s:match("ACCEPT 127%.0%.0%.1:(%d+)"))
  end, 5, 0.01)
  assert(p.port, "openssl s_server did not start:\n" .. (H.read_file(p.out) or "")
    .. (H.read_file(p.err) or ""))
  return p
end

---------------------------------------------------------------------------
-- scripts
---------------------------------------------------------------------------

-- Coroutine style: each line from the test is a Lua chunk returning
-- {host =, port =, opts =, send =}; the script dials, sends `send`, reads a
-- line back and answers with one line of key=value fields (tab separated).
local DIALER = [[
local hs = require "hotsock"
local function enc(v) return (tostring(v):gsub("[\t\n]", " ")) end
return {
  handle = function(conn)
    while true do
      local line = conn:receive("*l")
      if not line then return end
      local req = assert(load(line))()
      local out = {}
      local ok, up, err = pcall(hs.connect, req.host or "127.0.0.1", req.port, req.opts)
      if not ok then
        out[#out + 1] = "raised=" .. enc(up)
      elseif not up then
        out[#out + 1] = "err=" .. enc(err)
      else
        local t = up.tls
        out[#out + 1] = "connected=" .. enc(t ~= nil)
        for _, k in ipairs({ "version", "cipher", "alpn", "sni", "subject", "issuer", "serial",
                             "fingerprint", "resumed" }) do
          out[#out + 1] = k .. "=" .. enc(t and t[k])
        end
        if req.send then
          up:send(req.send)
          local r, e = up:receive("*l")
          out[#out + 1] = "reply=" .. enc(r)
          out[#out + 1] = "reply_err=" .. enc(e)
        end
        up:close()
      end
      local s = hs.stats()
      out[#out + 1] = "connects=" .. s.connects
      out[#out + 1] = "connect_failed=" .. s.connect_failed
      conn:send(table.concat(out, "\t"), "\n")
    end
  end,
}
]]

local function parse(line)
  local t = {}
  for k, v in (line or ""):gmatch("([%w_]+)=([^\t]*)") do t[k] = v end
  return t
end

-- Send one request (Lua source of a table) to a DIALER server; returns the
-- fields of its answer and the raw line.
local function dial(srv, req)
  local c = srv:connect(nil, 10)
  H.send(c, "return " .. req .. "\n")
  local l, err = H.line(c)
  assert(l, "no answer from the dialer: " .. tostring(err) .. "\n" .. srv:stderr():sub(-2000))
  return parse(l), l
end

-- Event style: a line (a Lua chunk returning {port =, tls =, timeout =})
-- makes an outbound connection whose handlers report to the client.
local EVENT_DIALER = [[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    local req = assert(load(line))()
    local up = hs.connect("127.0.0.1", req.port, {
      tls = req.tls, timeout = req.timeout, framing = "line",
      on_connect = function(up)
        local t = up.tls
        conn:send("on_connect ", tostring(t and t.version), " ", tostring(t and t.subject), "\n")
        up:send("abc\n")
      end,
      on_message = function(up, l)
        conn:send("on_message ", l, "\n")
        if l == "cba" then up:close() end
      end,
      on_close = function(up, reason)
        conn:send("on_close ", tostring(reason), " connect_failed=", hs.stats().connect_failed, "\n")
      end,
    })
    up:send("queued\n") -- before the connect and the handshake: held until both are done
    conn:send("returned ", tostring(up.tls), "\n")
  end,
}
]]

-- STARTTLS servers: "STARTTLS" gets "GO" in plain text, then
-- conn:starttls(OPTS); any other line is answered "GOT <line> <version>"
-- ("plain" before the upgrade). %s: the OPTS expression, then more module
-- fields.
local STARTTLS_EVENT = [[
local hs = require "hotsock"
local OPTS = %s
return {
  framing = "line",
  %s
  on_message = function(conn, line)
    if line == "STARTTLS" then
      conn:send("GO\n")
      local ok, err = conn:starttls(OPTS)
      io.stderr:write("@@ starttls ", tostring(ok), " ", tostring(err), " tls=", tostring(conn.tls), "\n")
      if not ok then conn:send("ERR ", tostring(err), "\n") end
      return
    end
    local t = conn.tls
    conn:send("GOT ", line, " ", t and t.version or "plain", "\n")
  end,
  on_close = function(conn, reason)
    local s = hs.stats()
    io.stderr:write("@@ closed ", tostring(reason), " tls_handshakes=", s.tls_handshakes,
      " tls_handshake_failures=", s.tls_handshake_failures, "\n")
  end,
}
]]

local STARTTLS_CORO = [[
local hs = require "hotsock"
local OPTS = %s
return {
  %s
  handle = function(conn)
    while true do
      local line, rerr = conn:receive("*l")
      if not line then
        io.stderr:write("@@ closed ", tostring(rerr), "\n")
        return
      end
      if line == "STARTTLS" then
        conn:send("GO\n")
        local ok, err = conn:starttls(OPTS)
        io.stderr:write("@@ starttls ", tostring(ok), " ", tostring(err), " tls=", tostring(conn.tls), "\n")
        if not ok then conn:send("ERR ", tostring(err), "\n") end
      else
        local t = conn.tls
        conn:send("GOT ", line, " ", t and t.version or "plain", "\n")
      end
    end
  end,
}
]]

describe("outbound TLS and STARTTLS", function()
  local dir, ca

  local function f(name) return dir .. "/" .. name end

  setup(function()
    dir = (sh("mktemp -d /tmp/hotsock-tlsc.XXXXXX"):gsub("%s+$", ""))
    make_certs(dir)
    ca = f("ca.pem")
  end)

  teardown(function()
    if dir and dir:match("^/tmp/hotsock%-tlsc%.") then os.execute("rm -rf " .. q(dir)) end
  end)

  after_each(function()
    stop_procs()
    H.cleanup()
  end)

  local function cert_field(file, what)
    local out, rc = sh(("openssl x509 -in %s -noout %s"):format(q(file), what))
    assert(rc == 0, out)
    return out
  end

  -------------------------------------------------------------------------
  -- A) hs.connect with tls
  -------------------------------------------------------------------------

  describe("hs.connect with tls (coroutine style)", function()
    it("talks to openssl s_server verified with ca, and shows the server certificate in up.tls", function()
      local s = s_server(f("cert.pem"), f("cert.key"))
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = 'hello\\n', opts = {tls = {ca = %q, sni = 'localhost'}}}")
        :format(s.port, ca))
      assert.are.equal("true", r.connected, line)
      assert.are.equal("olleh", r.reply, line)
      assert.are.equal("TLSv1.3", r.version)
      assert.truthy(r.cipher:match("^TLS_"), r.cipher)
      assert.are.equal("localhost", r.sni)
      assert.are.equal("nil", r.alpn)
      assert.are.equal("CN=localhost", r.subject)
      assert.are.equal("CN=hotsock-test-ca", r.issuer)
      local serial = cert_field(f("cert.pem"), "-serial"):match("serial=(%x+)")
      assert.are.equal(serial:upper(), r.serial:upper())
      local fp = cert_field(f("cert.pem"), "-fingerprint -sha256"):match("=([%x:]+)")
      assert.are.equal(fp:gsub(":", ""):lower(), r.fingerprint:lower())
      assert.are.equal("1", r.connects)
      assert.are.equal("0", r.connect_failed)
    end)

    it("checks an IP host against the certificate's IP addresses, and a name host against its names", function()
      local s = s_server(f("cert.pem"), f("cert.key"))
      local srv = H.start(DIALER)
      -- 127.0.0.1 is an IP SAN of cert.pem: no sni needed
      local r, line = dial(srv, ("{port = %d, send = 'ip\\n', opts = {tls = {ca = %q}}}"):format(s.port, ca))
      assert.are.equal("pi", r.reply, line)
      assert.are.equal("nil", r.sni, line) -- no SNI for an IP address
      -- a host name is sent as SNI and checked
      r, line = dial(srv, ("{host = 'localhost', port = %d, send = 'name\\n', opts = {tls = {ca = %q}}}")
        :format(s.port, ca))
      assert.are.equal("eman", r.reply, line)
      assert.are.equal("localhost", r.sni, line)

      -- dns.pem names localhost only: 127.0.0.1 is not one of its addresses
      local s2 = s_server(f("dns.pem"), f("dns.key"))
      r, line = dial(srv, ("{port = %d, send = 'x\\n', opts = {tls = {ca = %q}}}"):format(s2.port, ca))
      assert.is_nil(r.connected, line)
      assert.truthy(r.err and r.err:find("TLS handshake: certificate verify failed: IP address mismatch", 1, true), line)
      r, line = dial(srv, ("{port = %d, send = 'y\\n', opts = {tls = {ca = %q, sni = 'localhost'}}}")
        :format(s2.port, ca))
      assert.are.equal("y", r.reply, line)
    end)

    it("sends SNI for a name and none for an IP address (seen by a hotsock TLS listener)", function()
      local backend = H.start([[
return {
  on_connect = function(conn) conn:send("sni=", tostring(conn.tls.sni), "\n") end,
}
]], { listen = "tls://127.0.0.1:0", args = { "--tls-cert", f("cert.pem"), "--tls-key", f("cert.key") } })
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = '', opts = {tls = {ca = %q}}}"):format(backend.port, ca))
      assert.are.equal("sni=nil", r.reply, line)
      r, line = dial(srv, ("{port = %d, send = '', opts = {tls = {ca = %q, sni = 'localhost'}}}")
        :format(backend.port, ca))
      assert.are.equal("sni=localhost", r.reply, line)
    end)

    it("fails verification against the system CA store by default", function()
      local s = s_server(f("cert.pem"), f("cert.key"))
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = 'x\\n', opts = {tls = true}}"):format(s.port))
      assert.are.equal("TLS handshake: certificate verify failed: unable to get local issuer certificate",
        r.err, line)
      assert.are.equal("0", r.connects)
      assert.are.equal("1", r.connect_failed)
    end)

    it("fails on a self-signed certificate by default, and accepts it with verify = false", function()
      local s = s_server(f("self.pem"), f("self.key"))
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = 'x\\n', opts = {tls = true}}"):format(s.port))
      assert.are.equal("TLS handshake: certificate verify failed: self-signed certificate", r.err, line)
      assert.are.equal("1", r.connect_failed, line)
      r, line = dial(srv, ("{port = %d, send = 'x\\n', opts = {tls = {ca = %q, sni = 'localhost'}}}")
        :format(s.port, ca))
      assert.truthy(r.err and r.err:find("certificate verify failed", 1, true), line)
      assert.are.equal("2", r.connect_failed, line)
      r, line = dial(srv, ("{port = %d, send = 'insecure\\n', opts = {tls = {verify = false}}}"):format(s.port))
      assert.are.equal("erucesni", r.reply, line)
      assert.are.equal("CN=localhost", r.subject)
      assert.are.equal("CN=localhost", r.issuer)
      assert.are.equal("1", r.connects, line)
      assert.are.equal("2", r.connect_failed, line)
    end)

    it("fails on a name the certificate does not cover", function()
      local s = s_server(f("cert.pem"), f("cert.key"))
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = 'x\\n', opts = {tls = {ca = %q, sni = 'wrong.test'}}}")
        :format(s.port, ca))
      assert.are.equal("TLS handshake: certificate verify failed: hostname mismatch", r.err, line)
      assert.are.equal("1", r.connect_failed, line)
      -- the same name with verify = false: no check
      r, line = dial(srv, ("{port = %d, send = 'ok\\n', opts = {tls = {verify = false, sni = 'wrong.test'}}}")
        :format(s.port))
      assert.are.equal("ko", r.reply, line)
      assert.are.equal("wrong.test", r.sni, line)
    end)

    it("offers ALPN and shows what the server picked in up.tls.alpn", function()
      local s = s_server(f("cert.pem"), f("cert.key"), "-alpn http/1.1")
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = 'a\\n', opts = {tls = {ca = %q, alpn = {'h2', 'http/1.1'}}}}")
        :format(s.port, ca))
      assert.are.equal("a", r.reply, line)
      assert.are.equal("http/1.1", r.alpn, line)
      -- without alpn, none is agreed
      r, line = dial(srv, ("{port = %d, send = 'b\\n', opts = {tls = {ca = %q}}}"):format(s.port, ca))
      assert.are.equal("b", r.reply, line)
      assert.are.equal("nil", r.alpn, line)
    end)

    it("presents a client certificate to s_server -Verify", function()
      local s = s_server(f("cert.pem"), f("cert.key"), "-Verify 1 -CAfile " .. q(ca))
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = 'mtls\\n', opts = {tls = {ca = %q, cert = %q, key = %q}}}")
        :format(s.port, ca, f("client.pem"), f("client.key")))
      assert.are.equal("sltm", r.reply, line)
      -- s_server logs the chain it verified on stderr
      assert.truthy(H.wait_until(function()
        return (H.read_file(s.err) or ""):find("depth=0 CN = hotsock-client", 1, true)
      end, 3), H.read_file(s.err))
      -- without one, s_server refuses it: no answer comes back
      r, line = dial(srv, ("{port = %d, send = 'anon\\n', opts = {tls = {ca = %q}}}"):format(s.port, ca))
      assert.are_not.equal("nona", r.reply, line)
      assert.truthy(r.err or r.reply_err ~= "nil", line)
    end)

    it("applies min_version, ciphers and ciphersuites", function()
      local s12 = s_server(f("cert.pem"), f("cert.key"), "-tls1_2")
      local s13 = s_server(f("cert.pem"), f("cert.key"))
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, send = 'v\\n', opts = {tls = {ca = %q, ciphers = 'ECDHE-ECDSA-AES128-GCM-SHA256'}}}")
        :format(s12.port, ca))
      assert.are.equal("v", r.reply, line)
      assert.are.equal("TLSv1.2", r.version, line)
      assert.are.equal("ECDHE-ECDSA-AES128-GCM-SHA256", r.cipher, line)
      r, line = dial(srv, ("{port = %d, send = 'v\\n', opts = {tls = {ca = %q, min_version = 'TLSv1.3'}}}")
        :format(s12.port, ca))
      assert.truthy(r.err and r.err:match("^TLS handshake: "), line)
      r, line = dial(srv, ("{port = %d, send = 'w\\n', opts = {tls = {ca = %q, min_version = '1.3', ciphersuites = 'TLS_AES_128_GCM_SHA256'}}}")
        :format(s13.port, ca))
      assert.are.equal("w", r.reply, line)
      assert.are.equal("TLSv1.3", r.version, line)
      assert.are.equal("TLS_AES_128_GCM_SHA256", r.cipher, line)
    end)

    it("cuts a server that never answers the handshake at the connect timeout", function()
      -- a listening socket completes the TCP handshake and then says nothing
      local lsrv = assert(socket.bind("127.0.0.1", 0))
      local _, lport = lsrv:getsockname()
      local srv = H.start(DIALER)
      local r, line = dial(srv, ("{port = %d, opts = {timeout = 300, tls = true}}"):format(lport))
      lsrv:close()
      assert.are.equal("connect timeout (TLS handshake)", r.err, line)
      assert.are.equal("1", r.connect_failed, line)
      assert.truthy(srv:wait_log("TLS handshake with 127%.0%.0%.1:%d+ timed out", 3), srv:stderr())
    end)

    it("raises on malformed settings and returns nil, err for a missing ca file", function()
      local srv = H.start(DIALER)
      local lsrv = assert(socket.bind("127.0.0.1", 0))
      local _, lport = lsrv:getsockname()
      local function try(tls) return dial(srv, ("{port = %d, opts = {tls = %s}}"):format(lport, tls)) end
      local r, line = try("{bogus = 1}")
      assert.truthy(r.raised and r.raised:find('unknown TLS setting "bogus"', 1, true), line)
      r, line = try("{verify = 'yes'}")
      assert.truthy(r.raised and r.raised:find("verify must be true or false", 1, true), line)
      r, line = try("{ca = 42}")
      assert.truthy(r.raised and r.raised:find("ca must be a non-empty string", 1, true), line)
      r, line = try("{alpn = {}}")
      assert.truthy(r.raised and r.raised:find("alpn must be", 1, true), line)
      r, line = try("{min_version = 'TLSv1.1'}")
      assert.truthy(r.raised and r.raised:find("min_version", 1, true), line)
      r, line = try("{verify_client = 'required'}") -- a server setting
      assert.truthy(r.raised and r.raised:find('unknown TLS setting "verify_client"', 1, true), line)
      r, line = try("5")
      assert.truthy(r.raised and r.raised:find("tls must be true or a table", 1, true), line)
      r, line = try(("{ca = %q}"):format(dir .. "/no-such-ca.pem"))
      assert.is_nil(r.raised, line)
      assert.truthy(r.err and r.err:find("no-such-ca.pem: No such file or directory", 1, true), line)
      r, line = try(("{cert = %q}"):format(f("client.pem"))) -- cert without key
      assert.truthy(r.err and r.err:find("needs both cert and key", 1, true), line)
      -- the script carries on serving
      r, line = try("false") -- tls = false: plain
      assert.are.equal("false", r.connected, line)
      lsrv:close()
    end)
  end)

  describe("hs.connect with tls (event style)", function()
    it("calls on_connect once the handshake is done and delivers what was queued before", function()
      local s = s_server(f("cert.pem"), f("cert.key"))
      local srv = H.start(EVENT_DIALER)
      local c = srv:connect(nil, 10)
      H.send(c, ("return {port = %d, tls = {ca = %q, sni = 'localhost'}}\n"):format(s.port, ca))
      assert.are.equal("returned nil", H.line(c))
      assert.are.equal("on_connect TLSv1.3 CN=localhost", H.line(c))
      assert.are.equal("on_message deueuq", H.line(c))
      assert.are.equal("on_message cba", H.line(c))
      assert.are.equal("on_close closed connect_failed=0", H.line(c))
    end)

    it("reports a failed handshake to on_close and never calls on_connect", function()
      local s = s_server(f("self.pem"), f("self.key"))
      local srv = H.start(EVENT_DIALER)
      local c = srv:connect(nil, 10)
      H.send(c, ("return {port = %d, tls = true}\n"):format(s.port))
      assert.are.equal("returned nil", H.line(c))
      assert.are.equal("on_close TLS handshake: certificate verify failed: self-signed certificate connect_failed=1",
        H.line(c))
      assert.truthy(H.quiet(c, 0.3))
    end)

    it("reports a handshake that never completes to on_close at the connect timeout", function()
      local lsrv = assert(socket.bind("127.0.0.1", 0))
      local _, lport = lsrv:getsockname()
      local srv = H.start(EVENT_DIALER)
      local c = srv:connect(nil, 10)
      H.send(c, ("return {port = %d, tls = true, timeout = 300}\n"):format(lport))
      assert.are.equal("returned nil", H.line(c))
      assert.are.equal("on_close connect timeout (TLS handshake) connect_failed=1", H.line(c))
      lsrv:close()
    end)
  end)

  -------------------------------------------------------------------------
  -- B) STARTTLS
  -------------------------------------------------------------------------

  local ssl_ok, ssl = pcall(require, "ssl")

  -- Wrap a LuaSocket client in TLS (verifying with the test CA) and run the
  -- handshake. Returns the TLS connection, or nil, err.
  local function upgrade(c, opts)
    opts = opts or {}
    local params = { mode = "client", protocol = "any", verify = opts.verify or "peer",
      cafile = opts.cafile or ca, options = "all" }
    local s = assert(ssl.wrap(c, params))
    s:sni(opts.sni or "localhost")
    s:settimeout(5)
    local ok, err = s:dohandshake()
    if not ok then s:close() return nil, err end
    return s
  end

  -- The common name of the server certificate a LuaSec connection got.
  local function peer_cn(s)
    for _, e in ipairs(s:getpeercertificate():subject()) do
      if e.name == "commonName" or e.oid == "2.5.4.3" then return e.value end
    end
  end

  local function tls_args() return { "--tls-cert", f("cert.pem"), "--tls-key", f("cert.key") } end

  -- The STARTTLS exchange every case starts with: STARTTLS and SECRET in
  -- one send, "GO" back, then the handshake.
  local function starttls_client(srv)
    local c = srv:connect(nil, 5)
    H.send(c, "STARTTLS\nSECRET\n")
    assert.are.equal("GO", H.line(c))
    local s, err = upgrade(c)
    assert.truthy(s, "TLS handshake after STARTTLS failed: " .. tostring(err) .. "\n" .. srv:stderr():sub(-2000))
    return s
  end

  local function describe_style(style, template)
    describe("conn:starttls (" .. style .. " style)", function()
      before_each(function()
        if not ssl_ok then pending("LuaSec (require \"ssl\") is not installed") end
      end)

      it("upgrades in place; what was sent in plaintext after STARTTLS is discarded, never delivered", function()
        local srv = H.start(template:format("nil", ""), { args = tls_args() })
        local s = starttls_client(srv)
        H.send(s, "HELLO\n")
        assert.are.equal("GOT HELLO TLSv1.3", s:receive("*l"))
        srv:expect_log("STARTTLS: 7 byte(s) sent in plaintext after it were discarded", 3, true)
        srv:expect_log("@@ starttls true nil tls=nil\n", 3, true)
        assert.are.equal(0, srv:count_log("SECRET", true))
        H.send(s, "AGAIN\n")
        assert.are.equal("GOT AGAIN TLSv1.3", s:receive("*l"))
        s:close()
      end)

      it("takes its settings from the module's tls field, overlaid by opts", function()
        local mod = ("tls = {cert = %q, key = %q},"):format(f("cert.pem"), f("cert.key"))
        local srv = H.start(template:format("nil", mod))
        local s = starttls_client(srv)
        assert.are.equal("localhost", peer_cn(s))
        H.send(s, "M\n")
        assert.are.equal("GOT M TLSv1.3", s:receive("*l"))
        s:close()
        -- opts replace the default certificate for this connection
        local srv2 = H.start(template:format(("{cert = %q, key = %q}"):format(f("other.pem"), f("other.key")), mod))
        local c = srv2:connect(nil, 5)
        H.send(c, "STARTTLS\n")
        assert.are.equal("GO", H.line(c))
        local s2 = assert(upgrade(c, { sni = "other.test" }))
        assert.are.equal("other.test", peer_cn(s2))
        H.send(s2, "O\n")
        assert.are.equal("GOT O TLSv1.3", s2:receive("*l"))
        s2:close()
      end)

      it("keeps its framing across the upgrade", function()
        local srv = H.start(template:format("nil", ""), { args = tls_args() })
        local c = srv:connect(nil, 5)
        H.send(c, "before\n")
        assert.are.equal("GOT before plain", H.line(c))
        H.send(c, "STARTTLS\n")
        assert.are.equal("GO", H.line(c))
        local s = assert(upgrade(c))
        H.send(s, "A\nB\nC")  -- two lines and the start of a third in one record
        assert.are.equal("GOT A TLSv1.3", s:receive("*l"))
        assert.are.equal("GOT B TLSv1.3", s:receive("*l"))
        H.send(s, "D\n")      -- the rest of it in another
        assert.are.equal("GOT CD TLSv1.3", s:receive("*l"))
        s:close()
      end)

      it("returns nil, err without a certificate, and the connection stays plain", function()
        local srv = H.start(template:format("nil", ""))
        local c = srv:connect(nil, 5)
        H.send(c, "STARTTLS\n")
        assert.are.equal("GO", H.line(c))
        local l = H.line(c)
        assert.truthy(l and l:find("^ERR no TLS certificate"), l)
        H.send(c, "still\n")
        assert.are.equal("GOT still plain", H.line(c))
      end)

      it("returns nil, err on a connection already in TLS", function()
        local srv = H.start(template:format("nil", ""), { args = tls_args() })
        local s = starttls_client(srv)
        H.send(s, "STARTTLS\n")
        assert.are.equal("GO", s:receive("*l"))
        assert.are.equal("ERR the connection is already TLS", s:receive("*l"))
        H.send(s, "after\n")
        assert.are.equal("GOT after TLSv1.3", s:receive("*l"))
        s:close()
      end)

      it("closes the connection when the handshake after STARTTLS fails, and counts it", function()
        local srv = H.start(template:format("nil", ""), { args = tls_args() })
        local c = srv:connect(nil, 5)
        H.send(c, "STARTTLS\n")
        assert.are.equal("GO", H.line(c))
        H.send(c, "this is not a ClientHello\n")
        local err = H.read_to_close(c, 3)
        assert.truthy(err == "closed" or err == "connection reset by peer", err)
        srv:expect_log("TLS handshake from 127%.0%.0%.1:%d+ failed")
        if style == "event" then
          srv:expect_log("@@ closed TLS handshake failed tls_handshakes=0 tls_handshake_failures=1\n", 3, true)
        else
          srv:expect_log("@@ closed TLS handshake failed\n", 3, true)
        end
        srv:signal("USR2")
        assert.truthy(srv:wait_log("tls_handshake_failures=1", 3), srv:stderr())
      end)
    end)
  end

  describe_style("event", STARTTLS_EVENT)
  describe_style("coroutine", STARTTLS_CORO)

  describe("conn:starttls (settings and refusals)", function()
    it("raises on a malformed opts table", function()
      local srv = H.start([[
return {
  framing = "line",
  on_message = function(conn, line)
    local ok, err = pcall(conn.starttls, conn, load("return " .. line)())
    conn:send(tostring(ok), " ", tostring(err), " ", tostring(conn.tls), "\n")
  end,
}
]], { args = tls_args() })
      local c = srv:connect()
      H.send(c, "{bogus = 1}\n")
      local l = H.line(c)
      assert.truthy(l:find("^false .*unknown TLS setting \"bogus\""), l)
      H.send(c, "{alpn = 7}\n")
      l = H.line(c)
      assert.truthy(l:find("^false .*alpn must be"), l)
      H.send(c, "'cert.pem'\n")
      l = H.line(c)
      assert.truthy(l:find("^false .*table expected"), l)
      H.send(c, "{sni = 'x'}\n") -- a client setting on an accepted connection
      l = H.line(c)
      assert.truthy(l:find("^false .*unknown TLS setting \"sni\""), l)
    end)

    it("overlays opts on the --tls-cert/--tls-key defaults (min_version from opts, certificate from the defaults)", function()
      if not ssl_ok then return pending("LuaSec (require \"ssl\") is not installed") end
      local srv = H.start(STARTTLS_EVENT:format("{min_version = 'TLSv1.3'}", ""), { args = tls_args() })
      -- a TLS 1.2-only client is refused
      local c = srv:connect(nil, 5)
      H.send(c, "STARTTLS\n")
      assert.are.equal("GO", H.line(c))
      local s12 = assert(ssl.wrap(c, { mode = "client", protocol = "tlsv1_2", verify = "peer", cafile = ca }))
      s12:settimeout(5)
      assert.falsy((s12:dohandshake()))
      s12:close()
      srv:expect_log("@@ closed TLS handshake failed", 3, true)
      -- any version: TLS 1.3 with the default certificate
      local s = starttls_client(srv)
      assert.are.equal("localhost", peer_cn(s))
      H.send(s, "V\n")
      assert.are.equal("GOT V TLSv1.3", s:receive("*l"))
      s:close()
    end)

    it("cuts a client that sends STARTTLS and then no handshake at the first_byte time-out", function()
      local args = tls_args()
      args[#args + 1] = "--timeout"
      args[#args + 1] = "first_byte=300"
      local srv = H.start(STARTTLS_EVENT:format("nil", ""), { args = args })
      local c = srv:connect(nil, 5)
      H.send(c, "STARTTLS\n")
      assert.are.equal("GO", H.line(c))
      local err = H.read_to_close(c, 5)
      assert.truthy(err == "closed" or err == "connection reset by peer", err)
      srv:expect_log("TLS handshake from 127%.0%.0%.1:%d+ timed out")
      srv:expect_log("@@ closed handshake timeout tls_handshakes=0 tls_handshake_failures=1\n", 3, true)
    end)

    it("returns nil, err on a piped connection", function()
      local lsrv = assert(socket.bind("127.0.0.1", 0))
      lsrv:settimeout(3)
      local _, lport = lsrv:getsockname()
      local srv = H.start(([[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    local up = hs.connect("127.0.0.1", %d)
    conn:pipe(up)
    local ok, err = conn:starttls()
    conn:send(tostring(ok), " ", tostring(err), "\n")
  end,
}
]]):format(lport), { args = tls_args() })
      local c = srv:connect()
      H.send(c, "go\n")
      assert.are.equal("nil a piped connection cannot start TLS", H.line(c))
      local up = lsrv:accept()
      if up then up:close() end
      lsrv:close()
    end)
  end)

  describe("conn:starttls on an outbound connection", function()
    -- One script plays both parts: a client whose first line is "DIAL port"
    -- makes it connect to itself in plain text and upgrade that outbound
    -- connection with the settings given; any other connection is the
    -- STARTTLS server side.
    local SELF = [[
local hs = require "hotsock"
local OPTS = %s
local function serve(conn, line)
  while line do
    if line == "STARTTLS" then
      conn:send("GO\n")
      local ok, err = conn:starttls()
      if not ok then conn:send("ERR ", err, "\n") end
    else
      conn:send("GOT ", line, " ", conn.tls and conn.tls.version or "plain", "\n")
    end
    line = conn:receive("*l")
  end
end
return {
  handle = function(conn)
    local first = conn:receive("*l")
    local port = first and first:match("^DIAL (%%d+)$")
    if not port then return serve(conn, first) end
    local up, err = hs.connect("127.0.0.1", tonumber(port))
    if not up then return conn:send("connect failed ", err, "\n") end
    up:send("PLAIN\n")
    local r1 = up:receive("*l")
    up:send("STARTTLS\n")
    local go = up:receive("*l")
    local ok, serr = up:starttls(OPTS)
    local during = tostring(up.tls)
    up:send("SECURE\n")
    local r2, e2 = up:receive("*l")
    local t = up.tls or {}
    local s = hs.stats()
    conn:send(table.concat({ r1, go, tostring(ok), tostring(serr), during, tostring(r2), tostring(e2),
      tostring(t.version), tostring(t.sni), tostring(t.subject), tostring(t.issuer),
      "connects=" .. s.connects, "connect_failed=" .. s.connect_failed,
      "tls_handshakes=" .. s.tls_handshakes }, "|"), "\n")
  end,
}
]]

    it("makes the client side of the handshake with ca and sni (coroutine style, to itself)", function()
      local srv = H.start(SELF:format(("{ca = %q, sni = 'localhost'}"):format(ca)), { args = tls_args() })
      local c = srv:connect(nil, 10)
      H.send(c, ("DIAL %d\n"):format(srv.port))
      local l = H.line(c)
      -- the exchange itself: plain, go-ahead, upgrade, a line over TLS
      assert.are.equal("GOT PLAIN plain|GO|true|nil|nil|GOT SECURE TLSv1.3|nil|TLSv1.3|localhost"
        .. "|CN=localhost|CN=hotsock-test-ca", (l:match("^(.-)|connects=")), l)
      assert.truthy(l:find("|connect_failed=0|tls_handshakes=1$"), l)
      -- one hs.connect, one connect: the handshake after STARTTLS is not a
      -- second connect
      assert.are.equal("1", l:match("|connects=(%d+)|"), l)
    end)

    it("fails and closes the outbound connection when the server does not verify", function()
      -- no ca: the system store does not know the test CA
      local srv = H.start(SELF:format("{sni = 'localhost'}"), { args = tls_args() })
      local c = srv:connect(nil, 10)
      H.send(c, ("DIAL %d\n"):format(srv.port))
      local l = H.line(c)
      local parts = {}
      for p in (l .. "|"):gmatch("([^|]*)|") do parts[#parts + 1] = p end
      assert.are.equal("GOT PLAIN plain", parts[1], l)
      assert.are.equal("GO", parts[2], l)
      assert.are.equal("true", parts[3], l)  -- starttls itself succeeds; the handshake fails later
      assert.are.equal("nil", parts[6], l)   -- no answer to SECURE
      assert.truthy(parts[7]:find("certificate verify failed", 1, true), l)
      -- the accepted end of the same connection saw the handshake fail
      srv:expect_log("TLS handshake from 127%.0%.0%.1:%d+ failed")
    end)

    -- Event style: the client side sends STARTTLS from on_connect and
    -- upgrades when "GO" comes back; every on_connect and the reply are
    -- reported to the test's client.
    local EVENT_SELF = [[
local hs = require "hotsock"
local CA = %q
local function serve_line(conn, line)
  if line == "STARTTLS" then
    conn:send("GO\n")
    assert(conn:starttls())
  else
    conn:send("GOT ", line, " ", conn.tls and conn.tls.version or "plain", "\n")
  end
end
return {
  framing = "line",
  on_message = function(conn, line)
    local port = line:match("^DIAL (%%d+)$")
    if not port then return serve_line(conn, line) end
    local connects = 0
    hs.connect("127.0.0.1", tonumber(port), {
      framing = "line",
      on_connect = function(up)
        connects = connects + 1
        conn:send("on_connect ", connects, " tls=", up.tls and up.tls.version or "nil", "\n")
        if connects == 1 then up:send("STARTTLS\n") end
      end,
      on_message = function(up, l)
        if l == "GO" then
          local ok, err = up:starttls({ca = CA, sni = "localhost"})
          conn:send("starttls ", tostring(ok), " ", tostring(err), " tls=", tostring(up.tls), "\n")
          up:send("SECURE\n")
          return
        end
        conn:send("reply ", l, " connects=", hs.stats().connects, "\n")
        up:close()
      end,
      on_close = function(up, reason) conn:send("on_close ", tostring(reason), "\n") end,
    })
  end,
}
]]

    -- Lines the test's client gets, up to the outbound connection's on_close.
    local function event_self_lines()
      local srv = H.start(EVENT_SELF:format(ca), { args = tls_args() })
      local c = srv:connect(nil, 10)
      H.send(c, ("DIAL %d\n"):format(srv.port))
      local lines = {}
      repeat
        local l = H.line(c)
        lines[#lines + 1] = l
      until not l or l:match("^on_close ")
      return lines, table.concat(lines, "\n")
    end

    it("upgrades in event style and exchanges a line over TLS", function()
      local lines, all = event_self_lines()
      assert.are.equal("on_connect 1 tls=nil", lines[1], all)
      assert.are.equal("starttls true nil tls=nil", lines[2], all)
      local reply
      for _, l in ipairs(lines) do reply = reply or l:match("^reply (GOT SECURE %S+)") end
      assert.are.equal("GOT SECURE TLSv1.3", reply, all)
      assert.are.equal("on_close closed", lines[#lines], all)
    end)

    it("in event style, runs on_connect once and counts one connect", function()
      local lines, all = event_self_lines()
      assert.are.same({ "on_connect 1 tls=nil", "starttls true nil tls=nil",
        "reply GOT SECURE TLSv1.3 connects=1", "on_close closed" }, lines, all)
    end)
  end)
end)
