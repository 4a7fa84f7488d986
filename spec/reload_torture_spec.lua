-- Hot reload under load: 100 clients ping without pause while the script is
-- rewritten 20 times, good and broken versions in turn, saved in place and
-- by renaming a temporary file onto it. Nothing may be dropped, reordered
-- or disconnected; every good version must answer, every broken one must
-- leave the generation where it was.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local CLIENTS = 100
local WINDOW = 2          -- pings in flight per client
local STEPS = 20          -- rewrites: odd good, even broken

local function good(v)
  return ([[
local hs = require "hotsock"
local V = %d
return {
  framing = "line",
  on_connect = function(conn) conn.n = 0 end,
  on_message = function(conn, line)
    conn.n = conn.n + 1
    local s = hs.stats()
    conn:send(line, " ", conn.n, " v", V, " g", s.generation, " f", s.reload_failed,
      " e", s.handler_errors, "\n")
  end,
}
]]):format(v)
end

-- broken versions, each with a version number that must never answer
local broken = {
  function(v) return "return {\n  framing = 'line',\n  on_message = function(c, l) c:send(l end,\n}\n-- " .. v .. "\n" end,
  function(v) return "error('broken " .. v .. "')\nreturn {}\n" end,
  function(v) return "local n = 0\nwhile true do n = n + 1 end\nreturn { version = " .. v .. " }\n" end,
  function(v) return "return " .. v .. "\n" end,
  function(v)
    return good(v):gsub("return {\n", "return {\n  on_reload = function(old) error('no carry') end,\n", 1)
  end,
}

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function save(path, text, step)
  if step % 2 == 0 then
    write(path, text)
  else
    local tmp = path:gsub("([^/]+)$", ".%1.swp")
    write(tmp, text)
    assert(os.rename(tmp, path))
  end
end

describe("hot reload under load", function()
  after_each(H.cleanup)

  it("100 pinging clients see 20 rewrites without a lost, reordered or refused reply", function()
    local srv = H.start(good(1))
    local clients, state = {}, {}
    for i = 1, CLIENTS do
      local c = srv:connect()
      c:setoption("tcp-nodelay", true)
      clients[i] = c
      state[c] = { i = i, sent = 0, got = 0, buf = "", v = 1 }
    end

    local errors = {}
    local total = 0
    local latest = { v = 1, g = 0, f = 0, e = 0 }   -- from the newest reply seen
    local seen_v = {}                               -- version -> generations seen with it

    local function fail(msg)
      errors[#errors + 1] = msg
      if #errors > 20 then error(table.concat(errors, "\n")) end
    end

    local function on_reply(st, line)
      local p, seq, n, v, g, f, e = line:match("^p(%d+) (%d+) (%d+) v(%d+) g(%d+) f(%d+) e(%d+)$")
      if not p then return fail(("client %d: bad reply %q"):format(st.i, line)) end
      seq, n, v, g, f, e = tonumber(seq), tonumber(n), tonumber(v), tonumber(g), tonumber(f), tonumber(e)
      st.got = st.got + 1
      total = total + 1
      if tonumber(p) ~= st.i or seq ~= st.got then
        fail(("client %d: reply %q, expected sequence %d"):format(st.i, line, st.got))
      end
      if n ~= seq then fail(("client %d: conn.n is %d at ping %d (field lost)"):format(st.i, n, seq)) end
      if v < st.v then fail(("client %d: version went back from %d to %d"):format(st.i, st.v, v)) end
      st.v = v
      seen_v[v] = seen_v[v] or {}
      seen_v[v][g] = true
      if g > latest.g or f > latest.f or (g == latest.g and f == latest.f) then
        latest = { v = v, g = g, f = f, e = e }
      end
    end

    local function pump_send()
      for _, c in ipairs(clients) do
        local st = state[c]
        local out = {}
        while st.sent - st.got < WINDOW do
          st.sent = st.sent + 1
          out[#out + 1] = ("p%d %d\n"):format(st.i, st.sent)
        end
        if #out > 0 then
          local ok, err = c:send(table.concat(out))
          if not ok then fail(("client %d: send: %s"):format(st.i, err)) end
        end
      end
    end

    local function pump_recv(wait)
      local readable = socket.select(clients, nil, wait)
      for _, c in ipairs(readable) do
        local st = state[c]
        c:settimeout(0)
        local data, err, partial = c:receive(65536)
        c:settimeout(3)
        local chunk = data or partial
        if chunk and #chunk > 0 then
          st.buf = st.buf .. chunk
          while true do
            local line, rest = st.buf:match("^([^\n]*)\n(.*)$")
            if not line then break end
            st.buf = rest
            on_reply(st, line)
          end
        end
        if err and err ~= "timeout" then fail(("client %d: receive: %s"):format(st.i, err)) end
      end
    end

    -- ping until cond() holds (or the deadline passes)
    local function run_until(cond, timeout)
      local deadline = socket.gettime() + timeout
      repeat
        pump_send()
        pump_recv(0.02)
        if cond() then return true end
      until socket.gettime() > deadline
      return false
    end

    assert.is_true(run_until(function() return total >= CLIENTS * 3 end, 5), "no traffic")

    local gen, failed, version = 0, 0, 1
    local good_versions, bad_versions = { 1 }, {}
    for step = 1, STEPS do
      local before = total
      if step % 2 == 1 then
        version = version + 1
        good_versions[#good_versions + 1] = version
        save(srv.script, good(version), step)
        local ok = run_until(function()
          return latest.v == version and total > before + CLIENTS
        end, 5)
        assert.is_true(ok, ("good version %d never answered; stderr:\n%s"):format(version, srv:stderr():sub(-2000)))
        gen = gen + 1
        assert.are.equal(gen, latest.g, "generation after good version " .. version)
        assert.are.equal(failed, latest.f)
      else
        local v = 100 + step
        bad_versions[#bad_versions + 1] = v
        save(srv.script, broken[(step // 2 - 1) % #broken + 1](v), step)
        local ok = run_until(function()
          return latest.f == failed + 1 and total > before + CLIENTS
        end, 5)
        assert.is_true(ok, ("broken rewrite %d was not refused; stderr:\n%s"):format(step, srv:stderr():sub(-2000)))
        failed = failed + 1
        assert.are.equal(gen, latest.g, "a broken rewrite moved the generation")
        assert.are.equal(version, latest.v, "a broken rewrite changed the code")
      end
    end

    -- let every ping in flight come back
    local drained = H.wait_until(function()
      pump_recv(0.02)
      for _, c in ipairs(clients) do
        if state[c].got ~= state[c].sent then return false end
      end
      return true
    end, 5, 0)
    assert.is_true(drained, "replies missing at the end")

    assert.are.same({}, errors)
    for _, v in ipairs(good_versions) do
      assert.is_not_nil(seen_v[v], "no reply from version " .. v)
    end
    for _, v in ipairs(bad_versions) do
      assert.is_nil(seen_v[v], "a reply from broken version " .. v)
    end
    -- each good version answered with one generation: its own
    for i, v in ipairs(good_versions) do
      assert.are.same({ [i - 1] = true }, seen_v[v])
    end
    assert.are.equal(STEPS // 2, latest.g)
    assert.are.equal(STEPS // 2, latest.f)
    assert.are.equal(0, latest.e, "handler errors during the run")
    assert.are.equal(STEPS // 2, srv:count_log("reloaded (file change)", true))
    assert.are.equal(STEPS // 2, srv:count_log("reload (file change) failed", true))
    for _, c in ipairs(clients) do assert.is_true(state[c].got > 10) end
    -- still one connection per client: nobody was dropped or reconnected
    local probe = srv:connect()
    H.send(probe, "p0 1\n")
    local line = H.line(probe)
    assert.truthy(line:match(("^p0 1 1 v%d g%d "):format(version, STEPS // 2)), line)
    assert.are.equal(0, srv:count_log("closed", true), srv:stderr():sub(-2000))
    assert.are.equal(0, srv:stop())
  end)
end)
