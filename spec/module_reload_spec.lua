-- spec/module_reload_spec.lua: hs.module() is the handler module in service
-- now, so a long-lived handle coroutine that calls hs.module().step(...)
-- at each message runs the newest step after a reload (and the previous
-- one again after a rollback), while the coroutine and its locals stay.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local function version(v, extra)
  return ([[
local hs = require "hotsock"
local M = { %s }
M.loaded_with = tostring(hs.module())   -- the module in service while this chunk runs
function M.step(conn, msg, n)
  if msg == "boom" then error("v%d cannot boom") end
  if msg == "loaded" then return conn:send(M.loaded_with, "\n") end
  conn:send("v%d ", msg, " ", tostring(n), "\n")
end
function M.handle(conn)
  local n = 0                            -- lives as long as this coroutine
  while true do
    local msg = conn:receive("*l")
    if not msg then return end
    n = n + 1
    hs.module().step(conn, msg, n)
  end
end
return M
]]):format(extra or "", v, v)
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function ask(c, line)
  H.send(c, line .. "\n")
  return H.line(c)
end

describe("hs.module()", function()
  after_each(H.cleanup)

  it("a coroutine loop runs the new step after the file changes, in the same coroutine", function()
    local srv = H.start(version(1))
    local c = srv:connect()
    assert.are.equal("v1 a 1", ask(c, "a"))
    assert.are.equal("v1 b 2", ask(c, "b"))
    -- nil while the first load ran: there was no module in service yet
    assert.are.equal("nil", ask(c, "loaded"))
    socket.sleep(0.1)
    write(srv.script, version(2))
    srv:expect_log("reloaded %(file change%)")
    -- the next message gets the new reply; the counter shows the same coroutine
    assert.are.equal("v2 c 4", ask(c, "c"))
    -- and the reload's chunk saw the old module in service
    assert.truthy(ask(c, "loaded"):match("^table: "))
    assert.are.equal(0, srv:stop())
  end)

  it("follows SIGHUP reloads and rollbacks", function()
    local srv = H.start(version(1), { args = { "--no-watch" } })
    local a = srv:connect()
    assert.are.equal("v1 x 1", ask(a, "x"))
    write(srv.script, version(2, "reload = { rollback_errors = 1, within = 10000 }"))
    srv:signal("HUP")
    srv:expect_log("reloaded %(SIGHUP%)")
    assert.are.equal("v2 y 2", ask(a, "y"))
    -- another client makes v2 fail: it is rolled back
    local b = srv:connect()
    H.send(b, "boom\n")
    srv:expect_log("rolled back")
    assert.are.equal("v1 z 3", ask(a, "z"))
    assert.are.equal(0, srv:stop())
  end)
end)
