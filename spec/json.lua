-- spec/json.lua: a small strict JSON parser (RFC 8259) for the specs that
-- read hotsock's JSON (--log-format json, the admin endpoint's /stats and
-- /connections). The whole text must be one value, the text valid UTF-8,
-- strings free of raw control characters, escapes only the ones JSON has.
-- decode returns the value, or raises with the reason; JSON's null is
-- json.null.
local json_null = setmetatable({}, { __tostring = function() return "null" end })

local function decode(text)
  assert(utf8.len(text), "not valid UTF-8: " .. text)
  local i = 1
  local function fail(what) error(("JSON: %s at byte %d of %q"):format(what, i, text), 0) end
  local function ws() i = text:find("[^ \t\r\n]", i) or #text + 1 end
  local value
  local function str()
    i = i + 1 -- the opening quote
    local out = {}
    while true do
      local c = text:sub(i, i)
      if c == "" then fail("unterminated string") end
      if c == '"' then i = i + 1 return table.concat(out) end
      if c:byte() < 0x20 then fail("raw control character in a string") end
      if c == "\\" then
        local e = text:sub(i + 1, i + 1)
        local simple = ({ ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
          n = "\n", r = "\r", t = "\t" })[e]
        if simple then
          out[#out + 1] = simple
          i = i + 2
        elseif e == "u" then
          local h = text:sub(i + 2, i + 5)
          if not h:match("^%x%x%x%x$") then fail("bad \\u escape") end
          local cp = tonumber(h, 16)
          i = i + 6
          if cp >= 0xd800 and cp <= 0xdbff then
            local lo = text:match("^\\u(%x%x%x%x)", i)
            lo = lo and tonumber(lo, 16)
            if not lo or lo < 0xdc00 or lo > 0xdfff then fail("lone high surrogate") end
            cp = 0x10000 + (cp - 0xd800) * 0x400 + (lo - 0xdc00)
            i = i + 6
          elseif cp >= 0xdc00 and cp <= 0xdfff then
            fail("lone low surrogate")
          end
          out[#out + 1] = utf8.char(cp)
        else
          fail("bad escape \\" .. e)
        end
      else
        local j = text:find('["\\%c]', i) or #text + 1
        out[#out + 1] = text:sub(i, j - 1)
        i = j
      end
    end
  end
  function value()
    ws()
    local c = text:sub(i, i)
    if c == "{" then
      local obj = {}
      i = i + 1
      ws()
      if text:sub(i, i) == "}" then i = i + 1 return obj end
      while true do
        ws()
        if text:sub(i, i) ~= '"' then fail("expected a key") end
        local k = str()
        if obj[k] ~= nil then fail("duplicate key " .. k) end
        ws()
        if text:sub(i, i) ~= ":" then fail("expected ':'") end
        i = i + 1
        obj[k] = value()
        ws()
        local d = text:sub(i, i)
        i = i + 1
        if d == "}" then return obj end
        if d ~= "," then fail("expected ',' or '}'") end
      end
    elseif c == "[" then
      local arr = {}
      i = i + 1
      ws()
      if text:sub(i, i) == "]" then i = i + 1 return arr end
      while true do
        arr[#arr + 1] = value()
        ws()
        local d = text:sub(i, i)
        i = i + 1
        if d == "]" then return arr end
        if d ~= "," then fail("expected ',' or ']'") end
      end
    elseif c == '"' then
      return str()
    end
    local num = text:match("^-?%d[%d%.eE+-]*", i)
    if num then
      -- -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
      local int, frac, exp = num:match("^-?(%d+)(%.?%d*)(.*)$")
      if not int or (#int > 1 and int:sub(1, 1) == "0") or frac == "."
        or (exp ~= "" and not exp:match("^[eE][-+]?%d+$")) then
        fail("bad number " .. num)
      end
      i = i + #num
      return math.tointeger(tonumber(num)) or tonumber(num)
    end
    for lit, v in pairs({ ["true"] = true, ["false"] = false, null = json_null }) do
      if text:sub(i, i + #lit - 1) == lit then
        i = i + #lit
        return v
      end
    end
    fail("unexpected " .. (c == "" and "end" or c))
  end
  local v = value()
  ws()
  if i <= #text then fail("trailing text") end
  return v
end

return { decode = decode, null = json_null }
