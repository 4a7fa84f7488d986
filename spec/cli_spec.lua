package.path = "spec/?.lua;" .. package.path
local H = require "helper"
local socket = require "socket"

local GOOD = [[
return {
  framing = "line",
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]]

describe("the hotsock command line", function()
  after_each(H.cleanup)

  it("prints usage for -h and exits 0", function()
    local rc, out, err = H.run({ "-h" })
    assert.are.equal(0, rc)
    local text = out .. err
    assert.truthy(text:lower():find("usage", 1, true), "no usage text in: " .. text)
    assert.truthy(text:find("hotsock", 1, true), "usage does not name hotsock: " .. text)
  end)

  it("--check refuses a listen address a run could not try, and binds nothing", function()
    local script = H.write_script("return { on_message = function() end }")
    local cases = {
      { "nonsense", 'bad port in "nonsense"' },
      { "127.0.0.1:70000", 'bad port in "127.0.0.1:70000"' },
      { "unix:", 'bad unix socket path in "unix:"' },
      { "[::1:80", 'bad address "[::1:80"' },
    }
    for _, c in ipairs(cases) do
      local rc, out, err = H.run({ "--check", "-l", c[1], script })
      assert.are.equal(2, rc, c[1] .. ": " .. out .. err)
      assert.truthy(err:find(c[2], 1, true), err)
    end
    -- from the module's listen field too
    local bad = H.write_script("return { listen = '127.0.0.1:99999', on_message = function() end }")
    local rc, _, err = H.run({ "--check", bad })
    assert.are.equal(2, rc, err)
    assert.truthy(err:find('bad port in "127.0.0.1:99999"', 1, true), err)
    -- a good address passes, and is not bound: the same port can be checked twice
    local s = require("socket").bind("127.0.0.1", 0)
    local _, port = s:getsockname()
    rc = H.run({ "--check", "-l", "127.0.0.1:" .. port, script })
    s:close()
    assert.are.equal(0, rc)
  end)

  it("prints usage for --help and exits 0", function()
    local rc, out, err = H.run({ "--help" })
    assert.are.equal(0, rc)
    assert.truthy((out .. err):lower():find("usage", 1, true))
  end)

  it("prints a version for -V and --version and exits 0", function()
    for _, flag in ipairs({ "-V", "--version" }) do
      local rc, out, err = H.run({ flag })
      assert.are.equal(0, rc, flag)
      assert.truthy((out .. err):match("%d+%.%d+"), flag .. " printed no version: " .. out .. err)
    end
  end)

  it("an installed hotsock finds its helper modules from a script in any folder", function()
    local builddir = H.bin:match("^(.*)/[^/]*$")
    if not builddir or not io.open(builddir .. "/CMakeCache.txt") then
      pending("HOTSOCK_BIN is not in a CMake build tree")
      return
    end
    local prefix = H.write_script("", "unused"):match("^(.*)/[^/]*$") .. "/prefix"
    local ok = os.execute("cmake --install " .. H.quote(builddir) .. " --prefix " ..
      H.quote(prefix) .. " >/dev/null 2>&1")
    assert.is_true(ok == true, "cmake --install failed")
    local script = H.write_script([[
local resp = require "hotsock.resp"
local http = require "hotsock.http"
assert(resp.bulk("hi") == "$2\r\nhi\r\n")
assert(http.parse_head("GET / HTTP/1.1\r\nHost: x").headers.host == "x")
return { on_message = function() end }
]], "elsewhere.lua")
    local saved = H.bin
    H.bin = prefix .. "/bin/hotsock"
    local rc, out, err = H.run({ "--check", script })
    H.bin = saved
    assert.are.equal(0, rc, out .. err)
  end)

  it("exits 2 with a message on an unknown option", function()
    local script = H.write_script(GOOD)
    local rc, _, err = H.run({ "--no-such-option", script }, { timeout = 5 })
    assert.are.equal(2, rc)
    assert.truthy(#err > 0, "no message on stderr")
  end)

  it("exits 2 when no script is given", function()
    local rc, _, err = H.run({}, { timeout = 5 })
    assert.are.equal(2, rc)
    assert.truthy(#err > 0, "no message on stderr")
  end)

  it("exits 2 when the script file does not exist", function()
    local rc, _, err = H.run({ "-l", "127.0.0.1:0", "/tmp/hotsock-spec-no-such-script.lua" }, { timeout = 5 })
    assert.are.equal(2, rc)
    assert.truthy(err:find("no-such-script", 1, true), "message does not name the file: " .. err)
  end)

  describe("--check", function()
    it("exits 0 on a good script", function()
      local rc, out, err = H.run({ "--check", H.write_script(GOOD) }, { timeout = 5 })
      assert.are.equal(0, rc, out .. err)
    end)

    it("exits 0 on a good coroutine-style script", function()
      local rc, out, err = H.run({ "--check", H.write_script([[
return { handle = function(conn) conn:send("hi\n") end }
]]) }, { timeout = 5 })
      assert.are.equal(0, rc, out .. err)
    end)

    it("exits 2 and says so when the script does not return a table", function()
      local rc, out, err = H.run({ "--check", H.write_script("local x = 1\nreturn 42\n") }, { timeout = 5 })
      assert.are.equal(2, rc)
      assert.truthy((out .. err):lower():find("table", 1, true), "message does not mention a table: " .. out .. err)
    end)

    it("exits 2 and says so when the script returns nothing", function()
      local rc, out, err = H.run({ "--check", H.write_script("local x = 1\n") }, { timeout = 5 })
      assert.are.equal(2, rc)
      assert.truthy((out .. err):lower():find("table", 1, true), "message does not mention a table: " .. out .. err)
    end)

    it("exits 2 with file:line on a syntax error", function()
      local path = H.write_script("return {\n  framing = 'line',\n  on_message = function(conn, m) conn:send(m end,\n}\n", "broken.lua")
      local rc, out, err = H.run({ "--check", path }, { timeout = 5 })
      assert.are.equal(2, rc)
      assert.truthy((out .. err):find("broken.lua:3", 1, true), "message lacks broken.lua:3: " .. out .. err)
    end)

    it("exits 2 naming a handler typo such as on_mesage", function()
      local rc, out, err = H.run({ "--check", H.write_script([[
return {
  framing = "line",
  on_connect = function(conn) end,
  on_mesage = function(conn, line) conn:send(line) end,
}
]]) }, { timeout = 5 })
      assert.are.equal(2, rc)
      assert.truthy((out .. err):find("on_mesage", 1, true), "message does not name on_mesage: " .. out .. err)
    end)

    it("exits 2 when a script has neither handle nor on_connect/on_message", function()
      local rc, out, err = H.run({ "--check", H.write_script("return { framing = 'line' }\n") }, { timeout = 5 })
      assert.are.equal(2, rc, out .. err)
      assert.truthy(#(out .. err) > 0)
    end)

    it("exits 2 when a script has both handle and on_message", function()
      local rc, out, err = H.run({ "--check", H.write_script([[
return {
  handle = function(conn) end,
  on_message = function(conn, m) end,
}
]]) }, { timeout = 5 })
      assert.are.equal(2, rc, out .. err)
      assert.truthy(#(out .. err) > 0)
    end)

    it("exits 2 when the script raises while loading, naming file:line", function()
      local path = H.write_script("local x = 1\nerror('boom at load')\nreturn {}\n", "raises.lua")
      local rc, out, err = H.run({ "--check", path }, { timeout = 5 })
      assert.are.equal(2, rc)
      assert.truthy((out .. err):find("boom at load", 1, true), out .. err)
      assert.truthy((out .. err):find("raises.lua:2", 1, true), out .. err)
    end)
  end)

  it("exits 2 without serving when the script does not load", function()
    local rc, _, err = H.run({ "-l", "127.0.0.1:0", H.write_script("return 42\n") }, { timeout = 5 })
    assert.are.equal(2, rc)
    assert.is_nil(err:find("listening on", 1, true))
  end)

  it("prints the real port when port 0 is asked, and serves on it", function()
    local srv = H.start(GOOD)
    assert.are.equal(1, #srv.addrs)
    assert.truthy(srv.addrs[1]:match("^127%.0%.0%.1:%d+$"), srv.addrs[1])
    assert.is_true(srv.port > 0)
    local c = srv:connect()
    H.send(c, "ping\n")
    assert.are.equal("ping", H.line(c))
    assert.are.equal(0, srv:stop())
  end)

  it("prints one listening line per -l, each with its own port", function()
    local srv = H.start(GOOD, { listen = { "127.0.0.1:0", "127.0.0.1:0" } })
    assert.are.equal(2, #srv.addrs)
    local p1 = H.parse_addr(srv.addrs[1]).port
    local p2 = H.parse_addr(srv.addrs[2]).port
    assert.are_not.equal(p1, p2)
    for i = 1, 2 do
      local c = srv:connect(srv.addrs[i])
      H.send(c, "via " .. i .. "\n")
      assert.are.equal("via " .. i, H.line(c))
    end
    assert.are.equal(0, srv:stop())
  end)

  it("uses the script's listen field when no -l is given", function()
    -- find a free port first
    local probe = assert(socket.bind("127.0.0.1", 0))
    local _, port = probe:getsockname()
    probe:close()
    local srv = H.start(([[
return {
  listen = "127.0.0.1:%d",
  framing = "line",
  on_message = function(conn, line) conn:send(line, "\n") end,
}
]]):format(port), { listen = false })
    assert.are.equal("127.0.0.1:" .. port, srv.addrs[1])
    local c = srv:connect()
    H.send(c, "x\n")
    assert.are.equal("x", H.line(c))
  end)

  it("exits 1 when the port is already in use", function()
    local holder = assert(socket.bind("127.0.0.1", 0))
    local _, port = holder:getsockname()
    local rc, _, err = H.run({ "-l", "127.0.0.1:" .. port, H.write_script(GOOD) }, { timeout = 5 })
    holder:close()
    assert.are.equal(1, rc, "stderr: " .. err)
    assert.truthy(#err > 0)
  end)

  it("passes script arguments as arg and as the chunk's ...", function()
    local srv = H.start([[
local n = select("#", ...)
local a, b = ...
local info = table.concat({ tostring(n), tostring(a), tostring(b),
  tostring(arg and arg[1]), tostring(arg and arg[2]),
  tostring(arg and arg[0] and arg[0]:match("[^/]*$")) }, "|")
return {
  on_connect = function(conn) conn:send(info, "\n") end,
}
]], { script_args = { "first", "two words" }, script_name = "argscript.lua" })
    local c = srv:connect()
    assert.are.equal("2|first|two words|first|two words|argscript.lua", H.line(c))
  end)
end)
