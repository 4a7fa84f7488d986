-- spec/packaging_spec.lua: a binary copied anywhere finds the Lua helpers
-- (they are built into it), and a helper on HOTSOCK_LUA_PATH still wins.
package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local q = H.quote

describe("the Lua helpers built into the binary", function()
  after_each(H.cleanup)

  -- A copy of the binary in a folder of its own: no lua/ beside or above it.
  local function lone_binary()
    local d = H.tempdir() .. "/bin"
    assert(os.execute("mkdir -p " .. q(d) .. " && cp " .. q(H.bin) .. " " .. q(d) .. "/hotsock"))
    return d .. "/hotsock"
  end

  it("a copied binary finds hotsock.resp, hotsock.http and hotsock.redis without HOTSOCK_LUA_PATH", function()
    local bin = lone_binary()
    local script = H.write_script([[
local resp = require "hotsock.resp"
local http = require "hotsock.http"
local redis = require "hotsock.redis"
assert(resp.encode("x") == "$1\r\nx\r\n")
assert(type(http.parse_head) == "function" and type(redis.connect) == "function")
return { on_message = function() end }
]])
    local out, rc = H.sh("env -u HOTSOCK_LUA_PATH " .. q(bin) .. " --check " .. q(script))
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("OK", 1, true), out)
  end)

  it("hotsock test runs from a copied binary (the workbench is built in too)", function()
    local bin = lone_binary()
    local out, rc = H.sh("cd " .. q(H.root) .. " && env -u HOTSOCK_LUA_PATH " .. q(bin)
      .. " test examples/echo.hst")
    assert.are.equal(0, rc, out)
    assert.truthy(out:find("1 passed, 0 failed", 1, true), out)
  end)

  it("a helper on HOTSOCK_LUA_PATH wins over the built-in one", function()
    local bin = lone_binary()
    local dir = H.tempdir()
    assert(os.execute("mkdir -p " .. q(dir .. "/hotsock")))
    local f = assert(io.open(dir .. "/hotsock/resp.lua", "w"))
    f:write("return { from_path = true }\n")
    f:close()
    local script = H.write_script([[
assert(require("hotsock.resp").from_path, "the built-in helper was loaded")
return { on_message = function() end }
]])
    local out, rc = H.sh("HOTSOCK_LUA_PATH=" .. q(dir .. "/?.lua") .. " " .. q(bin) .. " --check "
      .. q(script))
    assert.are.equal(0, rc, out)
  end)
end)
