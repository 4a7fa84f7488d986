-- examples/smtp.lua driven by the real client, swaks (plain and with
-- --tls), by openssl s_client -starttls smtp, and by raw sockets for the
-- refusals: bad sequence, bare LF, long lines, sizes. Certificates are made
-- at test time with the openssl command in a temp dir.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local q = H.quote

local have = H.have

-- Run a shell command, bounded by the caller's `timeout`; returns its
-- output (stdout and stderr) and exit code.
local sh = H.sh

-- the example on a free port; args are the script's (--max-size ...),
-- options hotsock's (--tls-cert ...)
local function start(args, options)
  return H.start("examples/smtp.lua", { script_args = args, args = options })
end

-- swaks against srv, bounded; returns its transcript and exit code
local function swaks(srv, args)
  return sh(("timeout 20 swaks --server 127.0.0.1:%d --helo client.test %s </dev/null")
    :format(srv.port, args))
end

---------------------------------------------------------------------------
-- a raw client
---------------------------------------------------------------------------

-- One reply, all its lines (LuaSocket's "*l" drops the CRs), joined by "\n".
local function reply(c)
  local lines = {}
  repeat
    local l, err = c:receive("*l")
    if not l then
      error(("no reply (%s) after %q"):format(err, table.concat(lines, "\n")), 2)
    end
    lines[#lines + 1] = l
  until not l:find("^%d%d%d%-")
  return table.concat(lines, "\n")
end

local function ask(c, line)
  H.send(c, line .. "\r\n")
  return reply(c)
end

-- a connection past the greeting, and EHLO unless ehlo == false
local function session(srv, ehlo)
  local c = srv:connect()
  assert.are.equal("220 localhost ESMTP hotsock", reply(c))
  if ehlo ~= false then assert.matches("^250%-localhost greets client.test\n", ask(c, "EHLO client.test")) end
  return c
end

-- message n as XSHOW gives it back, with CRLF line ends as it arrived
local function show(c, n)
  local r = ask(c, "XSHOW" .. (n and " " .. n or ""))
  local text, last = {}, nil
  for l in (r .. "\n"):gmatch("(.-)\n") do
    if l:find("^250%-") then text[#text + 1] = l:sub(5) .. "\r\n" else last = l end
  end
  return table.concat(text), last
end

-- XLIST: the message lines ("id size <from> <to>..."), without the header
local function list(c)
  local r = ask(c, "XLIST")
  local out = {}
  for l in (r .. "\n"):gmatch("(.-)\n") do out[#out + 1] = l:sub(5) end
  local n = tonumber(table.remove(out, 1):match("^messages kept: (%d+)$"))
  assert.are.equal(n, #out, r)
  return out
end

local function send_message(c, from, to, data)
  assert.are.equal("250 OK", ask(c, "MAIL FROM:<" .. from .. ">"))
  for _, a in ipairs(to) do assert.are.equal("250 OK", ask(c, "RCPT TO:<" .. a .. ">")) end
  assert.are.equal("354 End data with <CR><LF>.<CR><LF>", ask(c, "DATA"))
  H.send(c, data .. ".\r\n")
  return reply(c)
end

describe("examples/smtp.lua", function()
  after_each(H.cleanup)

  describe("with swaks", function()
    if not have("swaks") then
      pending("swaks is not installed")
      return
    end

    it("delivers a message and shows it with XLIST and XSHOW", function()
      local srv = start()
      local out, rc = swaks(srv, "--from ann@client.test --to bob@server.test"
        .. " --header 'Subject: hello' --body 'one line of body'")
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("<-  250 OK: queued as 1", 1, true), out)
      assert.truthy(out:find("<-  221 Bye", 1, true), out)
      local size = tonumber(srv:expect_log(
        "message 1 from <ann@client%.test> to <bob@server%.test>, (%d+) bytes"))
      local c = session(srv)
      assert.are.same({ ("1 %d <ann@client.test> <bob@server.test>"):format(size) }, list(c))
      local text, last = show(c, 1)
      assert.are.equal("250 end of message 1", last)
      assert.are.equal(size, #text)
      assert.truthy(text:find("\r\nSubject: hello\r\n", 1, true), text)
      assert.truthy(text:find("\r\n\r\none line of body\r\n", 1, true), text)
      assert.are.equal(text, (show(c))) -- XSHOW alone: the newest
      assert.are.equal(0, srv:stop())
    end)

    it("takes several recipients, pipelined or not, and refuses past --max-rcpt", function()
      local srv = start({ "--max-rcpt", "3" })
      local out, rc = swaks(srv, "--from ann@client.test --to a@x.test,b@x.test,c@x.test")
      assert.are.equal(0, rc, out)
      out, rc = swaks(srv, "--pipeline --from ann@client.test --to d@x.test,e@x.test")
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("PIPELINING", 1, true), out)
      -- a fourth recipient is one too many; the other three still get it
      out, rc = swaks(srv, "--from ann@client.test --to f@x.test,g@x.test,h@x.test,i@x.test")
      assert.truthy(out:find("<** 452 Too many recipients", 1, true), out)
      assert.truthy(out:find("queued as 3", 1, true), out)
      local c = session(srv)
      local l = list(c)
      assert.are.equal(3, #l)
      assert.matches("^1 %d+ <ann@client%.test> <a@x%.test> <b@x%.test> <c@x%.test>$", l[1])
      assert.matches("^2 %d+ <ann@client%.test> <d@x%.test> <e@x%.test>$", l[2])
      assert.matches("^3 %d+ <ann@client%.test> <f@x%.test> <g@x%.test> <h@x%.test>$", l[3])
      assert.are.equal(0, srv:stop())
    end)

    it("removes the dot-stuffing of a body with lines that start with dots", function()
      local srv = start()
      local d = H.tempdir()
      local f = assert(io.open(d .. "/msg.txt", "wb"))
      f:write("Subject: dots\n\n.\n..\n.leading dot\n...\nlast line\n")
      f:close()
      local out, rc = swaks(srv, "--from ann@client.test --to bob@server.test --data @" .. q(d .. "/msg.txt"))
      assert.are.equal(0, rc, out)
      assert.truthy(out:find(" -> ..leading dot", 1, true), out) -- stuffed on the wire
      local c = session(srv)
      -- swaks ends the data with one more line end of its own
      assert.are.equal("Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\n...\r\nlast line\r\n\r\n",
        (show(c, 1)))
      assert.are.equal(0, srv:stop())
    end)

    it("refuses a message over --max-size with 552 and takes the next one", function()
      local srv = start({ "--max-size", "3000" })
      local out, rc = swaks(srv, "--from ann@client.test --to bob@server.test --body "
        .. q(("0123456789abcdef\n"):rep(300)))
      assert.are.equal(26, rc, out) -- swaks: "server did not accept mail following data"
      assert.truthy(out:find("<** 552 Message size exceeds fixed maximum message size", 1, true), out)
      out, rc = swaks(srv, "--from ann@client.test --to bob@server.test --body small")
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("queued as 1", 1, true), out)
      local c = session(srv)
      assert.are.equal(1, #list(c))
      -- said up front with SIZE=
      assert.matches("^250%-localhost.*\n250%-SIZE 3000\n", ask(c, "EHLO client.test"))
      assert.are.equal("552 Message size exceeds fixed maximum message size",
        ask(c, "MAIL FROM:<ann@client.test> SIZE=3001"))
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<ann@client.test> SIZE=3000 BODY=8BITMIME"))
      assert.are.equal(0, srv:stop())
    end)
  end)

  describe("over a raw socket", function()
    it("greets, answers EHLO, HELO, NOOP, VRFY, HELP, RSET and QUIT", function()
      local srv = start()
      local c = srv:connect()
      local greeting = "220 localhost ESMTP hotsock\r\n"
      assert.are.equal(greeting, H.recv(c, #greeting))
      local ehlo = "250-localhost greets client.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250 8BITMIME\r\n"
      H.send(c, "EHLO client.test\r\n")
      assert.are.equal(ehlo, H.recv(c, #ehlo))
      assert.are.equal("250 localhost", ask(c, "HELO client.test"))
      assert.are.equal("250 OK", ask(c, "NOOP"))
      assert.are.equal("250 OK", ask(c, "noop anything"))
      assert.are.equal("252 Cannot VRFY user, but will accept message and attempt delivery",
        ask(c, "VRFY bob"))
      assert.matches("^214 Commands: ", ask(c, "HELP"))
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<>")) -- the null sender
      assert.are.equal("250 OK", ask(c, "RSET"))
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<ann@client.test>")) -- RSET ended the first
      H.send(c, "QUIT\r\nNOOP\r\n")
      assert.are.equal("221 Bye", reply(c))
      local err, rest = H.read_to_close(c)
      assert.are.equal("closed", err)
      assert.are.equal("", rest)
      assert.are.equal(0, srv:stop())
    end)

    it("answers commands out of sequence with 503", function()
      local srv = start()
      local c = session(srv, false)
      assert.are.equal("503 Send HELO/EHLO first", ask(c, "MAIL FROM:<ann@client.test>"))
      assert.are.equal("503 Need MAIL command", ask(c, "RCPT TO:<bob@server.test>"))
      assert.are.equal("503 Need MAIL command", ask(c, "DATA"))
      assert.matches("^250%-", ask(c, "EHLO client.test"))
      assert.are.equal("503 Need MAIL command", ask(c, "DATA"))
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<ann@client.test>"))
      assert.are.equal("503 Nested MAIL command", ask(c, "MAIL FROM:<ann@client.test>"))
      assert.are.equal("503 Need RCPT command", ask(c, "DATA"))
      -- EHLO again ends the transaction
      assert.matches("^250%-", ask(c, "EHLO client.test"))
      assert.are.equal("503 Need MAIL command", ask(c, "RCPT TO:<bob@server.test>"))
      -- and a transaction ends with its DATA
      assert.are.equal("250 OK: queued as 1", send_message(c, "a@x.test", { "b@x.test" }, "hi\r\n"))
      assert.are.equal("503 Need MAIL command", ask(c, "RCPT TO:<bob@server.test>"))
      assert.are.equal(0, srv:stop())
    end)

    it("answers unknown commands with 500, known unimplemented ones with 502, bad syntax with 501", function()
      local srv = start()
      local c = session(srv)
      assert.are.equal("500 Command unrecognized", ask(c, "FROB"))
      assert.are.equal("500 Command unrecognized", ask(c, ""))
      assert.are.equal("502 Command not implemented", ask(c, "EXPN staff"))
      assert.are.equal("502 Command not implemented", ask(c, "AUTH PLAIN AGFubgBzZWNyZXQ="))
      assert.are.equal("501 Syntax: EHLO hostname", ask(c, "EHLO"))
      assert.are.equal("501 Syntax: MAIL FROM:<address>", ask(c, "MAIL FROM:ann@client.test"))
      assert.are.equal("501 Syntax: MAIL FROM:<address>", ask(c, "MAIL TO:<ann@client.test>"))
      assert.are.equal("555 Unsupported parameter RET=HDRS", ask(c, "MAIL FROM:<a@x.test> RET=HDRS"))
      assert.are.equal("250 OK", ask(c, "mail from: <a@x.test> size=10")) -- any case, a space after the colon
      assert.are.equal("501 Syntax: RCPT TO:<address>", ask(c, "RCPT TO:<>"))
      assert.are.equal("555 Unsupported parameter NOTIFY=NEVER", ask(c, "RCPT TO:<b@x.test> NOTIFY=NEVER"))
      assert.are.equal("501 Syntax: DATA", ask(c, "DATA now"))
      assert.are.equal("501 Syntax: VRFY address", ask(c, "VRFY"))
      assert.are.equal("501 No such message kept", ask(c, "XSHOW 7"))
      -- parameters need EHLO
      assert.are.equal("250 localhost", ask(c, "HELO client.test"))
      assert.are.equal("555 MAIL parameters need EHLO", ask(c, "MAIL FROM:<a@x.test> SIZE=10"))
      assert.are.equal(0, srv:stop())
    end)

    it("refuses a bare LF or CR in a command with 500 and goes on", function()
      local srv = start()
      local c = session(srv)
      assert.are.equal("500 Bare CR or LF in command (lines end with CRLF)",
        ask(c, "MAIL FROM:<a@x.test>\nRCPT TO:<b@x.test>"))
      assert.are.equal("500 Bare CR or LF in command (lines end with CRLF)", ask(c, "NOOP\rNOOP"))
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<a@x.test>")) -- no transaction was begun
      assert.are.equal(0, srv:stop())
    end)

    it("ends DATA only at CRLF.CRLF and refuses a message with a bare LF (no smuggling)", function()
      local srv = start()
      local c = session(srv)
      -- a server that took LF.LF as the end would see a second message here
      local smuggled = "Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<victim@x.test>\n"
        .. "DATA\nSubject: two\n\nsecond\n.\n"
      assert.are.equal("554 Message refused: bare CR or LF (lines end with CRLF)",
        send_message(c, "a@x.test", { "b@x.test" }, smuggled .. "\r\n"))
      -- the same with LF.CRLF and CR.CR
      assert.are.equal("554 Message refused: bare CR or LF (lines end with CRLF)",
        send_message(c, "a@x.test", { "b@x.test" }, "first\n.\r\nsecond\r\n"))
      assert.are.equal("554 Message refused: bare CR or LF (lines end with CRLF)",
        send_message(c, "a@x.test", { "b@x.test" }, "first\r.\rsecond\r\n"))
      -- nothing more was answered, nothing kept, and the session goes on
      assert.are.equal("250 OK", ask(c, "NOOP"))
      assert.are.same({}, list(c))
      assert.are.equal("250 OK: queued as 1", send_message(c, "a@x.test", { "b@x.test" }, "fine\r\n"))
      assert.is_nil(srv:stderr():find("evil", 1, true))
      assert.are.equal(0, srv:stop())
    end)

    it("keeps a message exactly: dots, an empty message, long lines, 8-bit bytes", function()
      local srv = start()
      local c = session(srv)
      local long = ("x"):rep(5000) -- over RFC 5321's 1000, taken in DATA
      local data = "..\r\n.a\r\n\r\n" .. long .. "\r\n\xc3\xa9t\xc3\xa9\r\n"
      assert.are.equal("250 OK: queued as 1", send_message(c, "a@x.test", { "b@x.test" }, data))
      assert.are.equal(".\r\na\r\n\r\n" .. long .. "\r\n\xc3\xa9t\xc3\xa9\r\n", (show(c, 1)))
      assert.are.equal("250 OK: queued as 2", send_message(c, "", { "b@x.test" }, ""))
      local text, last = show(c, 2)
      assert.are.equal("", text)
      assert.are.equal("250 end of message 2", last)
      assert.are.equal("2 0 <> <b@x.test>", list(c)[2])
      assert.are.equal(0, srv:stop())
    end)

    it("answers a command line over 512 bytes with 500 and goes on", function()
      local srv = start()
      local c = session(srv)
      local mail = "MAIL FROM:<" .. ("a"):rep(491) .. "@x.test>"
      local rcpt = "RCPT TO:<" .. ("b"):rep(494) .. "@x.test>"
      assert.are.equal(510, #mail)
      assert.are.equal(511, #rcpt)
      assert.are.equal("250 OK", ask(c, mail)) -- 512 bytes with its CRLF: taken
      assert.are.equal("500 Line too long", ask(c, rcpt))
      assert.are.equal("250 OK", ask(c, "RCPT TO:<b@x.test>"))
      assert.are.equal(0, srv:stop())
    end)

    it("answers a line over max_frame with 500 and closes", function()
      local srv = start()
      local c = session(srv)
      H.send(c, "NOOP " .. ("z"):rep(70000) .. "\r\nNOOP\r\n")
      assert.are.equal("500 Line too long", reply(c))
      local err, rest = H.read_to_close(c)
      assert.truthy(err == "closed" or err == "connection reset by peer", err)
      assert.are.equal("", rest)
      -- inside DATA too
      c = session(srv)
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<a@x.test>"))
      assert.are.equal("250 OK", ask(c, "RCPT TO:<b@x.test>"))
      assert.are.equal("354 End data with <CR><LF>.<CR><LF>", ask(c, "DATA"))
      H.send(c, ("z"):rep(70000) .. "\r\n.\r\n")
      assert.are.equal("500 Line too long", reply(c))
      err = H.read_to_close(c)
      assert.truthy(err == "closed" or err == "connection reset by peer", err)
      assert.are.same({}, list(session(srv)))
      assert.are.equal(0, srv:stop())
    end)

    it("answers a pipelined transaction in order", function()
      local srv = start()
      local c = srv:connect()
      H.send(c, "EHLO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n"
        .. "RCPT TO:<c@x.test>\r\nDATA\r\n")
      assert.are.equal("220 localhost ESMTP hotsock", reply(c))
      assert.matches("^250%-localhost greets client.test\n.*\n250 8BITMIME$", reply(c))
      for _ = 1, 3 do assert.are.equal("250 OK", reply(c)) end
      assert.are.equal("354 End data with <CR><LF>.<CR><LF>", reply(c))
      H.send(c, "Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
      assert.are.equal("250 OK: queued as 1", reply(c))
      assert.are.equal("250 OK", reply(c))
      assert.are.equal("221 Bye", reply(c))
      assert.are.equal("closed", (H.read_to_close(c)))
      assert.are.equal(0, srv:stop())
    end)

    it("keeps the last --keep messages, across a reload", function()
      local srv = start({ "--keep", "2" })
      local c = session(srv)
      for i = 1, 3 do
        assert.are.equal("250 OK: queued as " .. i,
          send_message(c, "a@x.test", { "b@x.test" }, "number " .. i .. "\r\n"))
      end
      assert.are.same({ "2 10 <a@x.test> <b@x.test>", "3 10 <a@x.test> <b@x.test>" }, list(c))
      assert.are.equal("501 No such message kept", ask(c, "XSHOW 1"))
      assert.are.equal("number 2\r\n", (show(c, 2)))
      srv:signal("HUP")
      srv:expect_log("reloaded")
      c = session(srv)
      assert.are.equal("number 3\r\n", (show(c)))
      assert.are.equal("250 OK: queued as 4", send_message(c, "a@x.test", { "b@x.test" }, "four\r\n"))
      assert.are.same({ "3", "4" }, { list(c)[1]:match("^%d+"), list(c)[2]:match("^%d+") })
      assert.are.equal(0, srv:stop())
    end)

    it("answers STARTTLS with 454 and does not offer it without a certificate", function()
      local srv = start()
      local c = session(srv, false)
      assert.is_nil(ask(c, "EHLO client.test"):find("STARTTLS", 1, true))
      assert.are.equal("454 TLS not available", ask(c, "STARTTLS"))
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<a@x.test>")) -- still in plain text, EHLO kept
      assert.are.equal(0, srv:stop())
    end)

    it("refuses bad arguments", function()
      for _, args in ipairs({ { "--keep" }, { "--keep", "0" }, { "--max-size", "big" }, { "--nope", "1" },
                              { "--hostname", "a b" } }) do
        local parts = { "--check", H.root .. "/examples/smtp.lua" }
        for _, a in ipairs(args) do parts[#parts + 1] = a end
        local rc, _, err = H.run(parts)
        assert.are.equal(2, rc, table.concat(args, " "))
        assert.truthy(err:find("usage: smtp.lua", 1, true), err)
      end
      local rc = H.run({ "--check", H.root .. "/examples/smtp.lua", "--hostname", "mx.test", "--keep", "5" })
      assert.are.equal(0, rc)
    end)
  end)

  -- STARTTLS: these need conn:starttls and hs.tls_settings from the core
  -- (the server's default certificate from --tls-cert/--tls-key); a build
  -- without them fails these and only these.
  describe("STARTTLS (needs conn:starttls in the core)", function()
    local dir, cert, key, ca

    setup(function()
      dir = (sh("mktemp -d /tmp/hotsock-smtp.XXXXXX"):gsub("%s+$", ""))
      local cmds = {
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2"
          .. " -subj /CN=hotsock-test-ca -keyout ca.key -out ca.pem",
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
          .. " -subj /CN=localhost -keyout key.pem -out req.csr",
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf",
        "openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
          .. " -extfile ext.cnf -out cert.pem",
      }
      for _, cmd in ipairs(cmds) do
        local out, rc = sh("cd " .. q(dir) .. " && " .. cmd)
        assert(rc == 0, cmd .. "\n" .. out)
      end
      cert, key, ca = dir .. "/cert.pem", dir .. "/key.pem", dir .. "/ca.pem"
    end)

    teardown(function()
      if dir and dir:match("^/tmp/hotsock%-smtp%.") then os.execute("rm -rf " .. q(dir)) end
    end)

    local function start_tls(args)
      return start(args, { "--tls-cert", cert, "--tls-key", key })
    end

    it("delivers with swaks --tls, the certificate verified", function()
      if not have("swaks") then return pending("swaks is not installed") end
      local srv = start_tls()
      local out, rc = swaks(srv, "--tls --tls-verify --tls-ca-path " .. q(ca)
        .. " --from ann@client.test --to bob@server.test --body 'over TLS'")
      assert.are.equal(0, rc, out)
      assert.truthy(out:find("<-  250 STARTTLS", 1, true), out)
      assert.truthy(out:find("<-  220 Ready to start TLS", 1, true), out)
      assert.truthy(out:find("=== TLS started", 1, true), out)
      -- the EHLO after the handshake, in TLS, offers no STARTTLS
      local after = out:match("=== TLS started.-\n(.*)$")
      assert.truthy(after:find(" ~> EHLO client.test", 1, true), out)
      assert.is_nil(after:find("STARTTLS", 1, true), out)
      assert.truthy(after:find("<~  250 OK: queued as 1", 1, true), out)
      srv:expect_log("STARTTLS: TLSv1%.[23] ")
      srv:expect_log("message 1 from <ann@client%.test> to <bob@server%.test>")
      local c = session(srv)
      assert.truthy(show(c, 1):find("\r\n\r\nover TLS\r\n", 1, true))
      assert.are.equal(0, srv:stop())
    end)

    it("forgets EHLO after STARTTLS and refuses a second STARTTLS (openssl s_client)", function()
      if not have("openssl") then return pending("openssl is not installed") end
      local srv = start_tls()
      local input = "MAIL FROM:<a@x.test>\nEHLO again.test\nSTARTTLS\nQUIT\n"
      local cmd = ("(printf %%s %s; sleep 0.5) | timeout 10 openssl s_client -connect 127.0.0.1:%d"
        .. " -starttls smtp -crlf -quiet -no_ign_eof -CAfile %s -verify_return_error 2>/dev/null")
        :format(q(input), srv.port, q(ca))
      local f = assert(io.popen(cmd, "r"))
      local out = f:read("a")
      f:close()
      assert.are.equal("503 Send HELO/EHLO first\r\n"
        .. "250-localhost greets again.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250 8BITMIME\r\n"
        .. "503 TLS already active\r\n221 Bye\r\n", out)
      assert.are.equal(0, srv:stop())
    end)

    it("offers STARTTLS in EHLO, not inside a transaction, and drops what was pipelined after it", function()
      local srv = start_tls()
      local c = session(srv, false)
      assert.are.equal("250-localhost greets client.test\n250-PIPELINING\n250-SIZE 10485760\n"
        .. "250-8BITMIME\n250 STARTTLS", ask(c, "EHLO client.test"))
      assert.are.equal("501 Syntax: STARTTLS", ask(c, "STARTTLS now"))
      assert.are.equal("250 OK", ask(c, "MAIL FROM:<a@x.test>"))
      assert.are.equal("503 MAIL transaction in progress", ask(c, "STARTTLS"))
      assert.are.equal("250 OK", ask(c, "RSET"))
      -- commands sent in plain text after STARTTLS are never answered
      H.send(c, "STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nNOOP\r\n")
      assert.are.equal("220 Ready to start TLS", reply(c))
      -- the core drops them and waits for a ClientHello: no answer, no close
      c:settimeout(0.5)
      local rest, err = H.read_all(c, 4096, 1)
      assert.are.equal("", rest)
      assert.are.equal("timeout", err)
      srv:expect_log("plaintext after it were discarded", 3, true)
      -- a client that sends no ClientHello but text: the handshake fails,
      -- that session ends, the server goes on
      c = session(srv)
      assert.are.equal("220 Ready to start TLS", ask(c, "STARTTLS"))
      H.send(c, "EHLO client.test\r\n")
      err = H.read_to_close(c)
      assert.truthy(err == "closed" or err == "connection reset by peer", err)
      assert.matches("^250%-", ask(session(srv, false), "EHLO client.test"))
      assert.is_nil(srv:stderr():find("handler error", 1, true), srv:stderr())
      assert.are.equal(0, srv:stop())
    end)
  end)
end)
