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

---------------------------------------------------------------------------
-- Installing: `cmake --install` into a prefix and `cpack -G DEB`, both from
-- one fresh build directory of this source tree made once for the block
-- (only the hotsock target: ~10-30 s). Needs cmake/cpack, and for the
-- .deb dpkg-deb; the man page check needs man (man-db).
---------------------------------------------------------------------------
describe("installing", function()
  after_each(H.cleanup)

  local work        -- a temp dir of this block's own (H.cleanup empties H.tempdir's after each test)
  local build_dir
  local build_result -- nil: not tried yet; else {ok, output}

  local function sh_ok(cmd)
    local out, rc = H.sh(cmd)
    assert(rc == 0, ("command failed (%s):\n%s\n%s"):format(tostring(rc), cmd, out:sub(-4000)))
    return out
  end

  -- Configure and build once (bounded); later calls get the same result.
  local function build()
    if build_result == nil then
      work = H.sh("mktemp -d /tmp/hotsock-pkg.XXXXXX"):gsub("%s+$", "")
      assert(work:match("^/tmp/hotsock%-pkg%."), work)
      build_dir = work .. "/build"
      -- CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: installing (and cpack) needs the
      -- hotsock target only, not the unit tests and bench tools.
      local cmd = ("timeout 300 cmake -S %s -B %s -DCMAKE_BUILD_TYPE=RelWithDebInfo "
        .. "-DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >/dev/null && timeout 600 cmake --build %s "
        .. "--target hotsock -j\"$(nproc)\" >/dev/null"):format(q(H.root), q(build_dir), q(build_dir))
      local out, rc = H.sh(cmd)
      build_result = { ok = rc == 0, out = out }
    end
    assert(build_result.ok, "the fresh build failed:\n" .. build_result.out:sub(-4000))
    return build_dir
  end

  teardown(function()
    if work and work:match("^/tmp/hotsock%-pkg%.") then os.execute("rm -rf " .. q(work)) end
  end)

  -- Run bin (HOTSOCK_LUA_PATH empty) on a copy of echo.lua in a temp dir of
  -- its own, on a free port, through H.start (stopped by its pid); a line
  -- comes back, and SIGTERM stops it with exit code 0.
  local function echo_works(bin, echo_lua)
    local path = H.tempdir() .. "/echo.lua"
    sh_ok("cp " .. q(echo_lua) .. " " .. q(path))
    local saved = H.bin
    H.bin = bin
    local ok, srv = pcall(H.start, path, { env = { HOTSOCK_LUA_PATH = "" } })
    H.bin = saved
    assert(ok, srv)
    local c = srv:connect()
    H.send(c, "hello from the package\n")
    assert.are.equal("hello from the package", H.line(c))
    c:close()
    assert.are.equal(0, srv:stop())
  end

  -- Plain lua5.4 with LUA_PATH=dir/?.lua (and nothing else) finds the
  -- helpers there and hotsock.resp encodes.
  local function plain_lua_finds_helpers(dir)
    local code = [[
local resp = require "hotsock.resp"
local http = require "hotsock.http"
assert(type(http.parse_head) == "function")
io.write(package.searchpath("hotsock.resp", package.path), "\n", resp.command("SET", "k", "v"))
]]
    local out = sh_ok("env -u LUA_PATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 LUA_PATH=" .. q(dir .. "/?.lua")
      .. " lua5.4 -e " .. q(code))
    assert.are.equal(dir .. "/hotsock/resp.lua\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", out)
  end

  -- The fresh build's version (its own binary, not HOTSOCK_BIN, which may be
  -- a sanitizer build).
  local function version()
    local out = sh_ok(q(build() .. "/hotsock") .. " --version")
    return assert(out:match("^hotsock (%S+)"), out)
  end

  it("cmake --install puts the binary, the helpers, the man page and the examples under the prefix", function()
    if not H.have("cmake") then
      pending("cmake is not installed")
      return
    end
    local dir = build()
    local prefix = work .. "/prefix"
    sh_ok(("timeout 60 cmake --install %s --prefix %s"):format(q(dir), q(prefix)))
    for _, f in ipairs({ "bin/hotsock", "share/lua/5.4/hotsock/resp.lua", "share/lua/5.4/hotsock/http.lua",
      "share/lua/5.4/hotsock/redis.lua", "share/lua/5.4/hotsock/test.lua",
      "share/lua/5.4/hotsock/workbench.lua", "share/man/man1/hotsock.1",
      "share/doc/hotsock/examples/echo.lua", "share/doc/hotsock/examples/echo.hst" }) do
      assert.truthy(H.read_file(prefix .. "/" .. f), "not installed: " .. f)
    end
    local bin = prefix .. "/bin/hotsock"
    assert.are.equal("hotsock " .. version(), sh_ok(q(bin) .. " --version"):match("^hotsock %S+"))
    local help = sh_ok(q(bin) .. " --help")
    assert.truthy(help:match("\nSee hotsock%(1%) for signals, exit codes and files%.\n$"), help)
    echo_works(bin, prefix .. "/share/doc/hotsock/examples/echo.lua")
    plain_lua_finds_helpers(prefix .. "/share/lua/5.4")
  end)

  it("installs a man page that renders without warnings and documents the exit status", function()
    if not (H.have("cmake") and H.have("man")) then
      pending("cmake or man (man-db) is not installed")
      return
    end
    local dir = build()
    local prefix = work .. "/prefix-man"
    sh_ok(("timeout 60 cmake --install %s --prefix %s"):format(q(dir), q(prefix)))
    local page = prefix .. "/share/man/man1/hotsock.1"
    local out = sh_ok("MANWIDTH=80 MANPAGER=cat PAGER=cat timeout 30 man -l " .. q(page))
    for _, section in ipairs({ "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS",
      "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO" }) do
      assert.truthy(out:find("\n" .. section .. "\n", 1, true), "no " .. section .. " section")
    end
    -- every long option of --help is in the page
    for opt in sh_ok(q(dir .. "/hotsock") .. " --help"):gmatch("%s(%-%-[%w%-]+)") do
      assert.truthy(out:find(opt, 1, true), opt .. " is not in hotsock(1)")
    end
    local warnings = sh_ok("(MANWIDTH=80 MANPAGER=cat timeout 30 man --warnings -l " .. q(page) .. " >/dev/null)")
    assert.are.equal("", warnings)
    if H.have("groff") then
      assert.are.equal("", sh_ok("timeout 30 groff -man -ww -z " .. q(page)))
    end
  end)

  it("cpack -G DEB makes a package with its dependencies that runs where it is unpacked", function()
    if not (H.have("cmake") and H.have("cpack") and H.have("dpkg-deb")) then
      pending("cmake, cpack or dpkg-deb (dpkg) is not installed")
      return
    end
    local dir = build()
    sh_ok(("cd %s && timeout 120 cpack -G DEB"):format(q(dir)))
    local arch = sh_ok("dpkg --print-architecture"):gsub("%s+$", "")
    local deb = ("%s/hotsock_%s_%s.deb"):format(dir, version(), arch)
    assert.truthy(H.read_file(deb), "no " .. deb)
    local info = sh_ok("dpkg-deb -I " .. q(deb))
    local depends = assert(info:match("\n Depends: ([^\n]+)"), info)
    for _, lib in ipairs({ "libuv1", "liblua5.4%-0", "libssl3", "libc6" }) do
      assert.truthy(depends:match("%f[%w]" .. lib .. "%f[^%w%.%-]"), lib .. " not in Depends: " .. depends)
    end
    assert.truthy(info:match("\n Recommends: [^\n]*lua%-socket"), info)
    assert.truthy(info:match("\n Section: net\n"), info)
    assert.truthy(info:match("\n Maintainer: [^\n]+<[^\n]+@[^\n]+>\n"), info)
    assert.truthy(info:match("\n Package: hotsock\n"), info)
    assert.truthy(info:match("\n Description: %S[^\n]*\n  %S"), info)
    local files = sh_ok("dpkg-deb -c " .. q(deb))
    for _, f in ipairs({ "./usr/bin/hotsock", "./usr/share/lua/5.4/hotsock/resp.lua",
      "./usr/share/man/man1/hotsock.1", "./usr/share/doc/hotsock/examples/echo.lua" }) do
      assert.truthy(files:find(" " .. f, 1, true), f .. " is not in the package:\n" .. files)
    end
    assert.is_nil(files:find(" %./usr/local/"), files)
    -- unpacked into a root of its own: the binary serves an example with the
    -- helpers built in (HOTSOCK_LUA_PATH unset, no lua/ beside it)
    local root = work .. "/root"
    sh_ok("dpkg-deb -x " .. q(deb) .. " " .. q(root))
    local bin = root .. "/usr/bin/hotsock"
    echo_works(bin, root .. "/usr/share/doc/hotsock/examples/echo.lua")
    local script = H.write_script([[
local resp = require "hotsock.resp"
local redis = require "hotsock.redis"
assert(resp.encode("x") == "$1\r\nx\r\n" and type(redis.connect) == "function")
return { on_message = function() end }
]])
    local out, rc = H.sh("env -u HOTSOCK_LUA_PATH " .. q(bin) .. " --check " .. q(script))
    assert.are.equal(0, rc, out)
    plain_lua_finds_helpers(root .. "/usr/share/lua/5.4")
  end)
end)
