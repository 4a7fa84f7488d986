-- spec/logformat_spec.lua: --log-format json: one JSON object per line on
-- stderr, in the --log-file and under the journal, strictly valid JSON
-- whatever bytes a client sent (docs/operations.md, "Logs: JSON").
-- Loopback only; every process is stopped by its PID.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local json = require "json"
local json_decode, json_null = json.decode, json.null

-- Every line of text, each one a JSON object with ts and level and msg as
-- hotsock writes them; prefix: a pattern each line starts with (stripped).
local function json_lines(text, prefix)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local body = line
    if prefix then
      local p = line:match("^" .. prefix)
      assert(p, "no " .. prefix .. " prefix: " .. line)
      body = line:sub(#p + 1)
    end
    assert.are.equal("{", body:sub(1, 1), "not a JSON object: " .. line)
    local ok, obj = pcall(json_decode, body)
    assert(ok, obj)
    assert.are.equal("table", type(obj), line)
    assert.truthy(type(obj.ts) == "string"
      and obj.ts:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"), line)
    assert.truthy(({ debug = 1, info = 1, warn = 1, error = 1 })[obj.level], line)
    assert.are.equal("string", type(obj.msg), line)
    for k in pairs(obj) do
      assert.truthy(({ ts = 1, level = 1, worker = 1, conn = 1, msg = 1 })[k], "key " .. k .. ": " .. line)
    end
    obj.line = line
    out[#out + 1] = obj
  end
  return out
end

local function find(objs, needle)
  for _, o in ipairs(objs) do
    if o.msg:find(needle, 1, true) then return o end
  end
  return nil
end

local LOGGER = [[
local hs = require "hotsock"
return {
  framing = "line",
  on_message = function(conn, line)
    if line == "long" then hs.log.warn(("\"\1" .. "é"):rep(3000)) else hs.log.info("got " .. line) end
    conn:send("ok\n")
  end,
}
]]

local function say(srv_or_addr, text)
  local c
  if type(srv_or_addr) == "string" then
    c = assert(H.connect_addr(srv_or_addr))
  else
    c = srv_or_addr:connect()
  end
  H.send(c, text .. "\n")
  assert.are.equal("ok", H.line(c))
  c:close()
end

-- What a decoder reads back for the raw bytes s as hotsock escapes them:
-- valid UTF-8 as it is, and each byte that is not, U+00XX of the byte.
local function expected_text(s)
  local out, i = {}, 1
  while i <= #s do
    local len
    for n = 1, 4 do
      local piece = s:sub(i, i + n - 1)
      if #piece == n and utf8.len(piece) == 1 and #utf8.char(utf8.codepoint(piece)) == n then
        len = n
        break
      end
    end
    if len then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = utf8.char(s:byte(i))
      i = i + 1
    end
  end
  return table.concat(out)
end

describe("--log-format json", function()
  after_each(H.cleanup)

  it("writes one strict JSON object per line; the spec helper still finds the port", function()
    local srv = H.start(LOGGER, { args = { "--log-format", "json" } })
    assert.truthy(srv.port, srv:stderr())
    assert.are.equal("127.0.0.1:" .. srv.port, srv.addrs[1])
    -- what users grep keeps working on the raw line
    assert.truthy(srv:stderr():match('"msg":"listening on 127%.0%.0%.1:%d+"}\n'), srv:stderr())
    say(srv, "hello")
    srv:expect_log("got hello", 3, true)
    assert.are.equal(0, srv:stop())
    local objs = json_lines(srv:stderr())
    local l = assert(find(objs, "listening on 127.0.0.1:" .. srv.port))
    assert.are.equal("info", l.level)
    assert.is_nil(l.conn)
    assert.is_nil(l.worker)
    local g = assert(find(objs, "got hello"))
    assert.are.equal("got hello", g.msg)
    assert.are.equal(1, g.conn)
    assert.truthy(find(objs, "stopped"))
    -- field order as documented: ts, level, (worker), (conn), msg
    assert.truthy(g.line:match('^{"ts":"[^"]+","level":"info","conn":1,"msg":"got hello"}$'), g.line)
  end)

  it("escapes CR, ESC, quotes, backslashes, controls and invalid UTF-8 a client sent", function()
    local srv = H.start(LOGGER, { args = { "--log-format", "json" } })
    -- \r and \x1b[31m, quotes, a backslash, a tab, DEL, valid UTF-8 (é, 😀),
    -- a lone 0xff, a cut-short sequence, an overlong '/', a surrogate
    local raw = 'a\rb\27[31mc "q" back\\slash\ttab\127del é😀 \255 \195 \192\175 \237\160\128 end'
    say(srv, raw)
    srv:expect_log("end", 3, true)
    local objs = json_lines(srv:stderr())
    local g = assert(find(objs, "got a"))
    assert.are.equal("got " .. expected_text(raw), g.msg)
    -- on the raw line no control byte and no invalid UTF-8 is left
    assert.is_nil(g.line:find("[%c\127]"), g.line)
    assert.truthy(utf8.len(g.line), g.line)
    assert.truthy(g.line:find([[a\rb\u001b[31mc \"q\" back\\slash\ttab\u007fdel é😀 \u00ff \u00c3 \u00c0\u00af \u00ed\u00a0\u0080 end]], 1, true), g.line)
  end)

  it("cuts a very long entry and keeps it valid JSON", function()
    local srv = H.start(LOGGER, { args = { "--log-format", "json" } })
    say(srv, "long")
    srv:expect_log("%.%.%.\"}\n", 3)
    local objs = json_lines(srv:stderr())
    local w
    for _, o in ipairs(objs) do if o.level == "warn" then w = o end end
    assert.truthy(w, srv:stderr())
    assert.truthy(#w.line < 4096, #w.line)
    assert.truthy(w.msg:match('^"\1é"\1é.*%.%.%.$'), w.msg)
  end)

  it("applies to the --log-file; the listening line goes to both", function()
    local path = H.tempdir() .. "/hotsock.log"
    local srv = H.start(LOGGER, { args = { "--log-format", "json", "--log-file", path } })
    say(srv, "to the file")
    assert.truthy(H.wait_until(function()
      return (H.read_file(path) or ""):find("got to the file", 1, true)
    end, 3))
    assert.are.equal(0, srv:stop())
    local in_file = json_lines(H.read_file(path))
    assert.truthy(find(in_file, "listening on 127.0.0.1:" .. srv.port))
    assert.truthy(find(in_file, "got to the file"))
    local on_stderr = json_lines(srv:stderr())
    assert.are.equal(1, #on_stderr, srv:stderr())
    assert.truthy(find(on_stderr, "listening on 127.0.0.1:" .. srv.port))
  end)

  it("says which worker wrote a line with --workers", function()
    local srv = H.start(LOGGER, { args = { "--log-format", "json", "--workers", "2" } })
    srv:expect_log("supervising 2 workers", 5, true)
    say(srv, "from a worker")
    srv:expect_log("got from a worker", 3, true)
    assert.are.equal(0, srv:stop())
    local objs = json_lines(srv:stderr())
    local g = assert(find(objs, "got from a worker"))
    assert.truthy(g.worker == 1 or g.worker == 2, g.line)
    assert.are.equal("number", type(g.conn), g.line)
    local sup = assert(find(objs, "supervising 2 workers"))
    assert.is_nil(sup.worker)
  end)

  it("keeps the journal's <N> priority prefix in front of the object", function()
    local dir = H.tempdir()
    local errfile = dir .. "/journal"
    assert(io.open(errfile, "w")):close()
    local devino = H.sh("stat -c %d:%i " .. H.quote(errfile)):gsub("%s+$", "")
    assert.truthy(devino:match("^%d+:%d+$"), devino)
    local script = H.write_script(LOGGER)
    local inner = ("JOURNAL_STREAM=%s exec %s --log-format json --log-level debug -l 127.0.0.1:0 %s 2>>%s")
      :format(devino, H.quote(H.bin), H.quote(script), H.quote(errfile))
    local p = H.spawn("sh -c " .. H.quote(inner), 30)
    local addr = H.wait_until(function()
      return (H.read_file(errfile) or ""):match('listening on ([^%s"]+)')
    end, 5)
    assert(addr, "no listening line; stderr:\n" .. (H.read_file(errfile) or ""))
    say(addr, "journal")
    assert.truthy(H.wait_until(function()
      return (H.read_file(errfile) or ""):find("got journal", 1, true)
    end, 3))
    H.stop_spawned(p)
    local text = H.read_file(errfile)
    local objs = json_lines(text, "<%d>")
    for _, o in ipairs(objs) do
      local prio = o.line:match("^<(%d)>")
      assert.are.equal(({ debug = "7", info = "6", warn = "4", error = "3" })[o.level], prio, o.line)
    end
    assert.truthy(find(objs, "got journal"))
  end)

  it("text is the default and can be asked for; another value is exit 2", function()
    local srv = H.start(LOGGER, { args = { "--log-format", "text" } })
    say(srv, "plain")
    srv:expect_log("got plain", 3, true)
    assert.truthy(srv:stderr():match("^%d%d%d%d%-%d%d%-%d%dT[^\n]* info listening on 127%.0%.0%.1:%d+\n"),
      srv:stderr())
    assert.is_nil(srv:stderr():find("{", 1, true))
    local rc, out, err = H.run({ "--log-format", "xml", "-l", "127.0.0.1:0", H.write_script(LOGGER) })
    assert.are.equal(2, rc)
    assert.are.equal("", out)
    assert.truthy(err:find('--log-format is text or json, not "xml"', 1, true), err)
    rc, out = H.run({ "--help" })
    assert.are.equal(0, rc)
    assert.truthy(out:find("--log-format", 1, true), out)
  end)

  it("the spec's JSON parser is strict", function()
    for _, bad in ipairs({ '{"a":1,}', '{"a":"\1"}', '{"a":"\\x41"}', "{'a':1}", '{"a":01}',
      '{"a":"\\ud800"}', '{"a":"\255"}', '{"a":1}x', '{"a":1,"a":2}', '{"a":1.}' }) do
      assert.is_false((pcall(json_decode, bad)), bad)
    end
    local v = json_decode('{"a":[1,-2.5e3,true,null],"b":"\\u00e9\\ud83d\\ude00\\n"}')
    assert.are.equal(-2500, v.a[2])
    assert.are.equal("é😀\n", v.b)
  end)
end)
