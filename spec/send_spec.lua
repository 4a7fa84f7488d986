-- spec/send_spec.lua: conn:send's write path (docs/lua-api.md): a large
-- send with nothing queued before it goes to the kernel at once, from the
-- strings themselves, and the bytes keep their order whatever path each
-- send takes; small sends gather and are written before the loop sleeps.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"

local BIG = 12000 -- over the 8 KiB that makes a send direct, under a fresh socket's buffer

local SCRIPT = [[
local BIG = ]] .. BIG .. [[

return {
  framing = "line",
  on_message = function(conn, line)
    local big = ("x"):rep(BIG - 1) .. "\n"
    if line == "big-first" then
      conn:send(big)
      local b1 = conn:buffered()
      conn:send("small\n")
      conn:send(("%d %d\n"):format(b1, conn:buffered()))
    elseif line == "small-first" then
      conn:send("first\n")
      conn:send(big)
      conn:send(("%d\n"):format(conn:buffered()))
    elseif line == "many" then
      -- more strings than one vector takes, a number and a table
      conn:send("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", 42, { "k", "l" }, big)
      conn:send("end\n")
    end
  end,
}
]]

describe("conn:send", function()
  after_each(H.cleanup)

  it("writes a large message at once, from the string, and keeps the order", function()
    local srv = H.start(SCRIPT)
    local c = srv:connect()
    H.send(c, "big-first\n")
    assert.are.equal(("x"):rep(BIG - 1), H.line(c))
    assert.are.equal("small", H.line(c))
    local b1, b2 = H.line(c):match("^(%d+) (%d+)$")
    -- Before the loop slept the kernel had taken (most of) the large send;
    -- the small one after it waited in the buffer.
    assert.truthy(tonumber(b1) < BIG, b1)
    assert.are.equal(tonumber(b1) + #"small\n", tonumber(b2))
  end)

  it("queues a large message behind output already waiting, in order", function()
    local srv = H.start(SCRIPT)
    local c = srv:connect()
    H.send(c, "small-first\n")
    assert.are.equal("first", H.line(c))
    assert.are.equal(("x"):rep(BIG - 1), H.line(c))
    assert.are.equal(tostring(#"first\n" + BIG), H.line(c))
  end)

  it("sends many values, numbers and tables in the order given", function()
    local srv = H.start(SCRIPT)
    local c = srv:connect()
    H.send(c, "many\n")
    assert.are.equal("abcdefghij42kl" .. ("x"):rep(BIG - 1), H.line(c))
    assert.are.equal("end", H.line(c))
  end)
end)
