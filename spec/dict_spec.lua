-- hs.dict: the dictionaries a module declares in `dicts`, through real
-- scripts on the real binary (one process; docs/lua-api.md, "Shared
-- dictionaries").
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

-- A script that runs each line it gets as Lua code, with `d` (the "main"
-- dictionary), `small` and `hs` in scope, and answers with one line that
-- is Lua source for what the code returned ("return 1, nil, 'x'"; %q keeps
-- an integer an integer and a float a float), or "error: ...". "hit" adds
-- one to the key "hits" and answers with the new count. `extra` is the
-- text of more module fields, `dicts` the declaration, `top` code run
-- first as the chunk loads.
local function script(extra, dicts, top)
  return ([[
local hs = require "hotsock"
%s
local d = hs.dict("main")      -- taken while the chunk loads: made right after
local small = hs.dict("small")
local ghost = hs.dict("ghost") -- never declared: raises when used
local env = setmetatable({ d = d, small = small, ghost = ghost, hs = hs }, { __index = _ENV })

local function encode(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local t = type(v)
    if t == "string" or t == "number" then
      out[i] = (string.format("%%q", v):gsub("\\\n", "\\n"))
    elseif t == "table" then
      local items = {}
      for j, x in ipairs(v) do items[j] = (string.format("%%q", x):gsub("\\\n", "\\n")) end
      out[i] = "{" .. table.concat(items, ",") .. "}"
    else
      out[i] = tostring(v)
    end
  end
  return "return " .. table.concat(out, ",")
end

return {
  framing = "line",
  dicts = %s,
  on_message = function(conn, line)
    if line == "hit" then
      local n, err = d:incr("hits", 1, 0)
      conn:send(tostring(n or err), "\n")
      return
    end
    local f, err = load(line, "=code", "t", env)
    if not f then return conn:send("error: ", (err:gsub("\n", " ")), "\n") end
    local res = table.pack(pcall(f))
    if not res[1] then return conn:send("error: ", (tostring(res[2]):gsub("\n", " ")), "\n") end
    conn:send(encode(table.unpack(res, 2, res.n)), "\n")
  end,
  %s
}
]]):format(top or "", dicts or '{ main = "1m", small = "64k" }', extra or "")
end

-- Run code on the server: the values it returned (packed), or nil and the
-- error line. The code is sent as one line.
local function eval(c, code)
  H.send(c, (code:gsub("%s*\n%s*", " ")) .. "\n") -- one line (no -- comments in code)
  local line = assert(H.line(c))
  if line:match("^error: ") then return nil, line end
  return table.pack(assert(load(line))())
end

-- The values code returned; fails on an error.
local function ev(c, code)
  local r, err = eval(c, code)
  assert(r, err)
  return table.unpack(r, 1, r.n)
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

describe("shared dictionaries (hs.dict)", function()
  after_each(H.cleanup)

  describe("in one running server", function()
    local srv, c
    before_each(function()
      srv = H.start(script())
      c = srv:connect()
    end)

    it("set and get keep strings, integers, floats and booleans apart", function()
      assert.same({ true, nil, false }, { ev(c, [[return d:set("s", "a\0b\nc")]]) })
      ev(c, [[d:set("i", 42) d:set("f", 42.0) d:set("t", true) d:set("no", false)]])
      ev(c, [[d:set("min", math.mininteger) d:set("big", 2^60) d:set("e", "")]])
      assert.equal("a\0b\nc", ev(c, [[return d:get("s")]]))
      local i, f = ev(c, [[return d:get("i"), d:get("f")]])
      assert.equal("integer", math.type(i))
      assert.equal(42, i)
      assert.equal("float", math.type(f))
      assert.equal(42.0, f)
      assert.same({ true, false }, { ev(c, [[return d:get("t"), d:get("no")]]) })
      assert.equal(math.mininteger, ev(c, [[return d:get("min")]]))
      assert.equal(2^60, ev(c, [[return d:get("big")]]))
      assert.equal("", ev(c, [[return d:get("e")]]))
      -- a longer value than the first buffer the host tries
      assert.equal(100000, ev(c, [[d:set("long", string.rep("xy", 50000)) return #d:get("long")]]))
      assert.equal("string", ev(c, [[return math.type(d:get("i")) and type(d:get("s"))]]))
      -- a value may change type; nil deletes
      assert.equal("now text", ev(c, [[d:set("i", "now text") return d:get("i")]]))
      assert.same({ true, nil, false }, { ev(c, [[return d:set("i", nil)]]) })
      assert.is_nil(ev(c, [[return d:get("i")]]))
      assert.equal(true, ev(c, [[return d:delete("t")]]))
      assert.equal(true, ev(c, [[return d:delete("t")]]))  -- absent: still true
      assert.is_nil(ev(c, [[return d:get("t")]]))
      assert.equal("hotsock.dict: main", ev(c, [[return tostring(d)]]))
    end)

    it("a missing key is nil; bad keys return an error; bad argument types raise", function()
      local r = eval(c, [[return d:get("nope")]])
      assert.equal(1, r.n)
      assert.is_nil(r[1])
      assert.same({ nil, "empty key" }, { ev(c, [[return d:get("")]]) })
      assert.same({ false, "empty key", false }, { ev(c, [[return d:set("", 1)]]) })
      assert.same({ false, "key too long", false },
        { ev(c, [[return d:set(string.rep("k", 65536), 1)]]) })
      assert.equal(7, ev(c, [[d:set(string.rep("k", 65535), 7) return d:get(string.rep("k", 65535))]]))
      assert.equal("n", ev(c, [[d:set(12, "n") return d:get("12")]]))  -- a number key is its string
      local _, err = eval(c, [[d:set({}, 1)]])
      assert.matches("bad argument #1 to 'set' %(string expected, got table%)", err)
      _, err = eval(c, [[d:set("k", {})]])
      assert.matches("string, number, boolean or nil expected", err)
      _, err = eval(c, [[d:set("k", 1, -1)]])
      assert.matches("ttl must be seconds", err)
      _, err = eval(c, [[d:incr("k", "1")]])
      assert.matches("number expected, got string", err)
      _, err = eval(c, [[d.get("k")]])
      assert.matches("hotsock.dict expected", err)
      _, err = eval(c, [[d:keys(-1)]])
      assert.matches("max must be", err)
      -- after all those errors the dictionary still works
      assert.equal(1, ev(c, [[d:set("ok", 1) return d:get("ok")]]))
    end)

    it("hs.dict of a name the module does not declare is nil and a message", function()
      assert.same({ nil, "no dictionary nope (declare it in dicts)" },
        { ev(c, [[return hs.dict("nope")]]) })
      assert.equal("hotsock.dict: small", ev(c, [[return tostring(hs.dict("small"))]]))
      -- a handle taken while the chunk loaded, on a name never declared
      local _, err = eval(c, [[return ghost:get("x")]])
      assert.matches("no dictionary ghost %(declare it in dicts%)", err)
      -- handles taken while loading and later ones are the same dictionary
      assert.equal("same", ev(c, [[d:set("w", "same") return hs.dict("main"):get("w")]]))
    end)

    it("an entry with a ttl expires; ttl and expire report and change it", function()
      ev(c, [[d:set("short", "v", 0.05) d:set("forever", "v")]])
      local left = ev(c, [[return d:ttl("short")]])
      assert.is_true(left > 0 and left <= 0.05, "ttl " .. tostring(left))
      assert.equal(0, ev(c, [[return d:ttl("forever")]]))
      assert.same({ nil, "not found" }, { ev(c, [[return d:ttl("absent")]]) })
      assert.truthy(H.wait_until(function() return ev(c, [[return d:get("short") == nil]]) end, 5, 0.02),
        "an entry with a 50 ms ttl was still there after 5 s")
      assert.same({ nil, "not found" }, { ev(c, [[return d:ttl("short")]]) })
      -- expire gives a ttl, and 0 takes it away
      assert.equal(true, ev(c, [[return d:expire("forever", 0.05)]]))
      ev(c, [[d:set("keep", "v", 0.05)]])
      assert.equal(true, ev(c, [[return d:expire("keep", 0)]]))
      assert.equal(0, ev(c, [[return d:ttl("keep")]]))
      assert.same({ nil, "not found" }, { ev(c, [[return d:expire("absent", 1)]]) })
      assert.truthy(H.wait_until(function() return ev(c, [[return d:get("forever") == nil]]) end, 5, 0.02))
      assert.equal("v", ev(c, [[return d:get("keep")]]))
      -- flush_expired reclaims what expired and says how many
      ev(c, [[for i = 1, 5 do d:set("x" .. i, i, 0.01) end]])
      assert.truthy(H.wait_until(function() return ev(c, [[return d:get("x5") == nil]]) end, 5, 0.02))
      assert.is_true(ev(c, [[return d:flush_expired()]]) >= 4)  -- x5's own get reclaimed it
      assert.equal(0, ev(c, [[return d:flush_expired()]]))
    end)

    it("add stores only an absent key, replace only a present one", function()
      assert.same({ false, "not found", false }, { ev(c, [[return d:replace("k", 1)]]) })
      assert.is_nil(ev(c, [[return d:get("k")]]))
      assert.same({ true, nil, false }, { ev(c, [[return d:add("k", 1)]]) })
      assert.same({ false, "exists", false }, { ev(c, [[return d:add("k", 2)]]) })
      assert.equal(1, ev(c, [[return d:get("k")]]))
      assert.same({ true, nil, false }, { ev(c, [[return d:replace("k", "two")]]) })
      assert.equal("two", ev(c, [[return d:get("k")]]))
      -- an expired entry is absent for both
      ev(c, [[d:set("e", 1, 0.01)]])
      assert.truthy(H.wait_until(function() return ev(c, [[return d:get("e") == nil]]) end, 5, 0.02))
      assert.same({ false, "not found", false }, { ev(c, [[return d:replace("e", 2)]]) })
      assert.same({ true, nil, false }, { ev(c, [[return d:add("e", 2)]]) })
    end)

    it("incr adds to numbers, starts from init, and refuses what is not a number", function()
      assert.same({ nil, "not found" }, { ev(c, [[return d:incr("n", 1)]]) })
      assert.same({ 11, nil, false }, { ev(c, [[return d:incr("n", 1, 10)]]) })
      assert.same({ 12, nil, false }, { ev(c, [[return d:incr("n", 1, 10)]]) }) -- init only when absent
      assert.equal(13, ev(c, [[return d:incr("n")]]))                          -- by defaults to 1
      local v = ev(c, [[return d:incr("n", 0.5)]])
      assert.equal("float", math.type(v))
      assert.equal(13.5, v)
      assert.equal("integer", math.type((ev(c, [[return d:incr("m", -3, 0)]]))))
      assert.equal(math.mininteger, ev(c, [[d:set("w", math.maxinteger) return d:incr("w", 1)]]))
      assert.same({ nil, "not a number" }, { ev(c, [[d:set("s", "5") return d:incr("s", 1)]]) })
      assert.same({ nil, "not a number" }, { ev(c, [[d:set("b", true) return d:incr("b", 1, 0)]]) })
      -- init_ttl: a counter made by incr can expire
      ev(c, [[d:incr("win", 1, 0, 0.05)]])
      local left = ev(c, [[return d:ttl("win")]])
      assert.is_true(left > 0 and left <= 0.05)
      assert.truthy(H.wait_until(function() return ev(c, [[return d:get("win") == nil]]) end, 5, 0.02))
    end)

    it("keys lists the live keys, most recently used first, up to max", function()
      ev(c, [[d:set("a", 1) d:set("b", 2) d:set("gone", 3, 0.01) d:set("c", 3) d:get("a")]])
      assert.truthy(H.wait_until(function() return ev(c, [[return d:get("gone") == nil]]) end, 5, 0.02))
      assert.same({ "a", "c", "b" }, ev(c, [[return d:keys()]]))
      assert.same({ "a", "c" }, ev(c, [[return d:keys(2)]]))
      ev(c, [[for i = 1, 1500 do d:set("k" .. i, i) end]])
      assert.equal(1024, ev(c, [[return #d:keys()]]))
      assert.equal(1503, ev(c, [[return #d:keys(0)]]))
      assert.equal("k1500", ev(c, [[return d:keys(1)[1] ]]))
    end)

    it("flush_all empties the dictionary and free_space shows the room again", function()
      local empty = ev(c, [[return d:free_space()]])
      assert.is_true(empty > 1000000 * 0.9 and empty < 1048576, "free_space " .. empty)
      assert.equal(1048576, ev(c, [[return d:capacity()]]))
      ev(c, [[for i = 1, 100 do d:set("k" .. i, string.rep("v", 100)) end]])
      local used = ev(c, [[return d:free_space()]])
      assert.is_true(used < empty - 100 * 140, "free_space after 100 sets: " .. used)
      ev(c, [[d:flush_all()]])
      assert.equal(empty, ev(c, [[return d:free_space()]]))
      assert.is_nil(ev(c, [[return d:get("k1")]]))
      assert.same({}, ev(c, [[return d:keys(0)]]))
      assert.same({ true, nil, false }, { ev(c, [[return d:set("k1", 1)]]) })
    end)

    it("a full dictionary evicts the least recently used entries and set says so", function()
      -- small is 64k: about a hundred 500-byte values fit
      local first = ev(c, [[
        small:set("hot", "h")
        local forced_at
        for i = 1, 600 do
          local ok, err, forcible = small:set("k" .. i, string.rep("v", 500))
          assert(ok, err)
          if forcible and not forced_at then forced_at = i end
          assert(small:get("hot") == "h")
        end
        return forced_at]])
      assert.is_true(first > 60 and first < 130, "first eviction at " .. tostring(first))
      assert.equal("h", ev(c, [[return small:get("hot")]]))   -- read at every step
      assert.is_nil(ev(c, [[return small:get("k1")]]))         -- never read again
      assert.is_nil(ev(c, [[return small:get("k300")]]))
      assert.equal(500, ev(c, [[return #small:get("k600")]]))
      -- safe_set and safe_add never evict
      local r = table.pack(ev(c, [[return small:safe_set("new", string.rep("v", 2000))]]))
      assert.same({ false, "no memory", false }, { r[1], r[2], r[3] })
      assert.same({ false, "no memory", false },
        { ev(c, [[return small:safe_add("new", string.rep("v", 2000))]]) })
      assert.same({ true, nil, true }, { ev(c, [[return small:set("new", string.rep("v", 2000))]]) })
      -- a value that cannot fit even in an empty dictionary
      assert.same({ false, "value too large", false },
        { ev(c, [[return small:set("huge", string.rep("x", 70000))]]) })
      assert.equal("h", ev(c, [[return small:get("hot")]]))
    end)

    it("many clients incrementing one key at once reach the exact total", function()
      local clients, per = 20, 100
      local conns = {}
      for i = 1, clients do conns[i] = srv:connect() end
      -- every client pipelines all its increments at once
      for i = 1, clients do H.send(conns[i], string.rep("hit\n", per)) end
      local max = 0
      for i = 1, clients do
        for _ = 1, per do
          local n = tonumber(assert(H.line(conns[i])))
          if n > max then max = n end
        end
      end
      assert.equal(clients * per, max)
      assert.equal(clients * per, ev(c, [[return d:get("hits")]]))
    end)
  end)

  describe("across reloads", function()
    it("contents survive SIGHUP and a save of the script, and handles keep working", function()
      local srv = H.start(script(), { args = { "--no-watch" } })
      local c = srv:connect()
      ev(c, [[d:set("kept", "yes") d:incr("count", 5, 0) small:set("s", 1.5)]])
      srv:signal("HUP")
      srv:expect_log("reloaded %(SIGHUP%): generation 1")
      c = srv:connect() -- a new client gets the new module (and its handle on main)
      assert.equal("yes", ev(c, [[return d:get("kept")]]))
      assert.equal(6, ev(c, [[return d:incr("count", 1)]]))
      assert.equal(1.5, ev(c, [[return small:get("s")]]))
      srv:stop()

      -- a save: the file watcher reloads it
      srv = H.start(script())
      c = srv:connect()
      ev(c, [[d:set("kept", "saved")]])
      socket.sleep(0.1)
      write(srv.script, script("version = 2,"))
      srv:expect_log("reloaded %(file change%): generation 1", 5)
      c = srv:connect()
      assert.equal("saved", ev(c, [[return d:get("kept")]]))
    end)

    it("reloads while clients keep incrementing lose no increment", function()
      local srv = H.start(script(), { args = { "--no-watch" } })
      local conns = {}
      for i = 1, 5 do conns[i] = srv:connect() end
      local total = 0
      for round = 1, 5 do
        for i = 1, 5 do H.send(conns[i], string.rep("hit\n", 50)) end
        srv:signal("HUP")
        for i = 1, 5 do
          for _ = 1, 50 do assert(tonumber(H.line(conns[i]))) end
        end
        total = total + 250
        srv:expect_log("reloaded %(SIGHUP%): generation " .. round)
      end
      local c = srv:connect()
      assert.equal(total, ev(c, [[return d:get("hits")]]))
    end)

    it("a reload may add a dictionary when the server runs as one process", function()
      local srv = H.start(script(), { args = { "--no-watch" } })
      local c = srv:connect()
      ev(c, [[d:set("kept", 1)]])
      write(srv.script, script(nil, '{ main = "1m", small = "64k", extra = "128k" }',
        'hs.shared.extra = hs.dict("extra") -- taken before it is made'))
      srv:signal("HUP")
      srv:expect_log("reloaded %(SIGHUP%): generation 1")
      c = srv:connect()
      assert.equal(131072, ev(c, [[return hs.dict("extra"):capacity()]]))
      assert.equal(131072, ev(c, [[return hs.shared.extra:capacity()]]))
      assert.same({ true, nil, false }, { ev(c, [[return hs.dict("extra"):set("x", 1)]]) })
      assert.equal(1, ev(c, [[return d:get("kept")]]))
    end)

    it("a reload that resizes a dictionary is refused and the old code keeps serving", function()
      local srv = H.start(script("version = 1,"), { args = { "--no-watch" } })
      local c = srv:connect()
      ev(c, [[d:set("kept", 1)]])
      write(srv.script, script("version = 2,", '{ main = "2m", small = "64k" }'))
      srv:signal("HUP")
      srv:expect_log("reload %(SIGHUP%) failed.-dictionary main: adding or resizing a dictionary " ..
        "takes a restart %(it has 1m; the module asks for 2m%)")
      c = srv:connect()
      assert.equal(1, ev(c, [[return hs.module().version]]))
      assert.equal(1, ev(c, [[return d:get("kept")]]))
      -- a bad declaration fails a reload too
      write(srv.script, script("version = 3,", '{ main = "1m", small = "lots" }'))
      srv:signal("HUP")
      srv:expect_log("reload %(SIGHUP%) failed.-dicts: small: the size must be")
      assert.equal(1, ev(c, [[return hs.module().version]]))
    end)
  end)

  -- --workers N: every worker maps the same dictionaries (made before the
  -- fork); skipped where the binary has no --workers.
  local has_workers = select(2, H.run({ "--help" })):find("--workers", 1, true)
  local wdescribe = has_workers and describe or pending
  wdescribe("shared by --workers", function()
    local function hammer(srv, clients, per)
      local conns = {}
      for i = 1, clients do conns[i] = srv:connect() end
      for i = 1, clients do H.send(conns[i], string.rep("hit\n", per)) end
      for i = 1, clients do
        for _ = 1, per do assert(tonumber(H.line(conns[i]))) end
      end
      return conns
    end

    it("increments of one key from every worker add up exactly", function()
      local srv = H.start(script(), { args = { "--workers", "4", "--no-watch" } })
      local conns = hammer(srv, 40, 200)
      -- whichever worker a client landed on, it sees the same total
      for i = 1, #conns do assert.equal(8000, ev(conns[i], [[return d:get("hits")]])) end
    end)

    it("reloads under load keep the count, and cannot add a dictionary", function()
      local srv = H.start(script(), { args = { "--workers", "3", "--no-watch" } })
      local total = 0
      for round = 1, 3 do
        local conns = {}
        for i = 1, 12 do conns[i] = srv:connect() end
        for i = 1, 12 do H.send(conns[i], string.rep("hit\n", 100)) end
        srv:signal("HUP")
        for i = 1, 12 do
          for _ = 1, 100 do assert(tonumber(H.line(conns[i]))) end
        end
        total = total + 1200
        assert.truthy(H.wait_until(function()
          return srv:count_log("reloaded %(SIGHUP%): generation " .. round) == 3
        end, 5), "every worker reloads:\n" .. srv:stderr())
      end
      assert.equal(total, ev(srv:connect(), [[return d:get("hits")]]))
      write(srv.script, script(nil, '{ main = "1m", small = "64k", extra = "64k" }'))
      srv:signal("HUP")
      srv:expect_log("dictionary extra: adding or resizing a dictionary takes a restart")
      assert.equal(total, ev(srv:connect(), [[return d:get("hits")]]))
    end)
  end)

  describe("declarations", function()
    local function check(dicts)
      local path = H.write_script(script(nil, dicts))
      return H.run({ "--check", path })
    end

    it("--check accepts sizes in bytes, k, m and g", function()
      local rc, out = check('{ a = 65536, b = "64k", c = "2M", d = "1g" }')
      assert.equal(0, rc)
      assert.matches("OK", out)
    end)

    it("a bad declaration stops the start with exit code 2 and says why", function()
      local rc, _, err = check('{ main = "1m", small = "12q" }')
      assert.equal(2, rc)
      assert.matches('dicts: small: the size must be a number of bytes or a string such as "16m"', err)
      rc, _, err = check('{ main = "1m", small = "1k" }')
      assert.equal(2, rc)
      assert.matches("dicts: small: the size must be from 64k to 16g, not 1024 bytes", err)
      rc, _, err = check('"16m"')
      assert.equal(2, rc)
      assert.matches("dicts: must be a table of name = size", err)
      rc, _, err = check('{ main = "1m", small = "64k", [1] = "64k" }')
      assert.equal(2, rc)
      assert.matches("dicts: a dictionary name is a string of 1 to 63 bytes", err)
    end)

    it("a module the script requires may take a handle as it loads", function()
      local srv = H.start(script(nil, nil, 'local state = require "state"'), {
        files = { ["state.lua"] = 'local hs = require "hotsock"\nreturn { d = hs.dict("main") }\n' },
      })
      local c = srv:connect()
      assert.equal("yes", ev(c, [[require("state").d:set("x", "yes") return d:get("x")]]))
    end)

    it("a handle cannot be used before the chunk that declares it has returned", function()
      local rc, _, err = H.run({ "--check", H.write_script(script(nil, nil, 'hs.dict("main"):set("k", 1)')) })
      assert.equal(2, rc)
      assert.matches("no dictionary main %(declare it in dicts%)", err)
    end)

    it("a module without dicts has none", function()
      local srv = H.start(script(nil, "nil"))
      local c = srv:connect()
      assert.same({ nil, "no dictionary main (declare it in dicts)" },
        { ev(c, [[return hs.dict("main")]]) })
      local _, err = eval(c, [[return d:get("x")]])
      assert.matches("no dictionary main %(declare it in dicts%)", err)
    end)
  end)
end)
