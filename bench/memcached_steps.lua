-- bench/memcached_steps.lua: how far a memcached SET in Lua can go on this
-- host, one step of work at a time (docs/performance.md, "Where the time
-- goes now"). STEP=1: frame the command line, switch to the data block's
-- byte count, answer STORED, keep nothing. STEP=2: also keep the value in
-- a table by key. STEP=3 (default): also split the line into words with
-- gmatch, as examples/memcached.lua does. SET only (memcslap --test=set):
--   STEP=1 taskset -c 0 build-bench/hotsock -l 127.0.0.1:11311 bench/memcached_steps.lua
--   taskset -c 1 memcslap --servers=127.0.0.1:11311 --test=set --concurrency=50 --execute-number=4000
local STEP = tonumber(os.getenv("STEP")) or 3
local STORED = "STORED\r\n"
local pending = setmetatable({}, { __mode = "k" }) -- conn -> key of its data block
local db = {}

local function command(msg)
  if STEP < 3 then return msg:match("^set ([^ ]+) %d+ %-?%d+ (%d+)$") end
  local t, n = {}, 0
  for word in msg:gmatch("[^ ]+") do
    n = n + 1
    t[n] = word
  end
  return t[2], t[5]
end

return {
  framing = "line",
  max_frame = 1024 * 1024 + 2,
  on_message = function(conn, msg)
    local key = pending[conn]
    if key then
      pending[conn] = nil
      conn:framing("line")
      if STEP >= 2 then db[key] = { data = msg, flags = "0", exp = false, cas = 1 } end
      return conn:send(STORED)
    end
    local k, bytes = command(msg)
    if not k then return conn:send("ERROR\r\n") end
    pending[conn] = k
    conn:framing(tonumber(bytes) + 2)
  end,
}
