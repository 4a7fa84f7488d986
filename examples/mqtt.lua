-- examples/mqtt.lua: an MQTT 3.1.1 broker (a subset), event style.
--
-- Try it:
--   hotsock -l 127.0.0.1:1883 examples/mqtt.lua
--   mosquitto_sub -p 1883 -t 'sensors/+/temp' -t 'alerts/#' -v &
--   mosquitto_pub -p 1883 -t sensors/kitchen/temp -m 21.5          # QoS 0
--   mosquitto_pub -p 1883 -t alerts/door/front -m open -q 1        # QoS 1
--   mosquitto_pub -p 1883 -t status -m up -r                       # retained
--   mosquitto_sub -p 1883 -t status -C 1                           # "up" at once
--   mosquitto_pub -p 1883 -t status -r -n                          # clears it
--   mosquitto_sub -p 1883 -t x --will-topic alerts/gone --will-payload bye &
--   kill -9 $!                        # the first subscriber gets "alerts/gone bye"
--
-- CONNECT/CONNACK (MQTT 3.1.1, and 3.1's "MQIsdp"; no stored sessions: every
-- session is clean, a client id in use is taken over), SUBSCRIBE/SUBACK and
-- UNSUBSCRIBE/UNSUBACK with + and # wildcards, PUBLISH at QoS 0 and 1 with
-- PUBACK, delivered at the lower of the message's QoS and the
-- subscription's, retained messages (an empty retained payload clears
-- one), PINGREQ/PINGRESP, DISCONNECT, and the last will, published when a
-- client goes away without DISCONNECT (closed, reset, keep-alive timeout,
-- protocol error). A subscription asking for QoS 2 is granted QoS 1; a
-- QoS 2 PUBLISH is acknowledged (PUBREC, PUBREL, PUBCOMP) and delivered
-- once, at QoS 1 at most. Messages in flight are not resent.
--
-- The host cuts the stream into packets with {length = "varint", header =
-- 1, max_bytes = 4}: on_message gets the first byte (type and flags) and
-- the rest of the packet, without the remaining-length bytes. A remaining
-- length that needs a fifth byte closes that client ("malformed length
-- prefix"), as does a packet over max_frame; either way its will goes out.
-- Subscriptions and the will live in fields of conn, retained messages in
-- hs.shared: editing this file keeps the clients, what they subscribed to,
-- and the retained messages. `--log-level debug` logs each subscription.
local hs = require "hotsock"

local S = hs.shared.mqtt
if not S then
  -- retained: topic -> {payload =, qos =, levels =}; ids: client ids handed out
  S = { retained = {}, ids = 0 }
  hs.shared.mqtt = S
end

local byte, char, pack, unpack = string.byte, string.char, string.pack, string.unpack
local min = math.min

-- packet types: the high nibble of the first byte
local CONNECT, PUBLISH, PUBACK, PUBREL = 1, 3, 4, 6
local SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 8, 10, 12, 14
local NAMES = { "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
  "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT" }

local CONNECT_WAIT = 10000 -- ms a new client has to send CONNECT

-- the remaining length, as the framing reads it: 7 bits a byte, low first
local function varint(n)
  local s = ""
  repeat
    local b = n % 128
    n = n // 128
    s = s .. char(n > 0 and b + 128 or b)
  until n == 0
  return s
end

local function packet(first, body)
  return char(first) .. varint(#body) .. body
end

---------------------------------------------------------------------------
-- topics: "a/b/c" is the list of levels {"a", "b", "c"}
---------------------------------------------------------------------------

local function levels(s)
  local t, i = {}, 1
  while true do
    local j = s:find("/", i, true)
    if not j then
      t[#t + 1] = s:sub(i)
      return t
    end
    t[#t + 1] = s:sub(i, j - 1)
    i = j + 1
  end
end

-- a topic name (PUBLISH, will): not empty, no wildcards
local function valid_topic(s)
  return s ~= "" and not s:find("[#+%z]")
end

-- a topic filter: its levels, or nil. "+" is one whole level; "#" is the
-- whole last level
local function filter_levels(s)
  if s == "" or s:find("%z") then return nil end
  local lv = levels(s)
  for i, l in ipairs(lv) do
    if l == "#" then
      if i ~= #lv then return nil end
    elseif l ~= "+" and l:find("[#+]") then
      return nil
    end
  end
  return lv
end

-- does filter f match topic t (both as levels)? A filter that starts with
-- a wildcard does not match topics that start with "$" ($SYS/...).
local function matches(f, t, dollar)
  if dollar and (f[1] == "#" or f[1] == "+") then return false end
  for i = 1, #f do
    local l = f[i]
    if l == "#" then return true end -- "a/#" matches "a" too
    local tl = t[i]
    if tl == nil or (l ~= "+" and l ~= tl) then return false end
  end
  return #f == #t
end

---------------------------------------------------------------------------
-- publishing
---------------------------------------------------------------------------

-- One PUBLISH to conn: t is the topic as sent (2-byte length, bytes). At
-- QoS 1 it carries this connection's next packet id. The payload is sent
-- as its own piece, never copied into a new string.
local function send_publish(conn, t, payload, qos, retain)
  local first = 0x30 | (qos << 1) | (retain and 1 or 0)
  if qos == 0 then
    return conn:send(char(first), varint(#t + #payload), t, payload)
  end
  local id = conn.next_id % 65535 + 1
  conn.next_id = id
  return conn:send(char(first), varint(#t + 2 + #payload), t, pack(">I2", id), payload)
end

-- Keep or clear the retained message, then deliver to every client with a
-- matching subscription, at the lower of qos and the highest QoS granted
-- to one of its matching filters. The retain flag is not passed on to
-- established subscriptions.
local function publish(topic, payload, qos, retain)
  local lv = levels(topic)
  if retain then
    S.retained[topic] = payload ~= "" and { payload = payload, qos = min(qos, 1), levels = lv } or nil
  end
  local t, dollar = pack(">s2", topic), byte(topic) == 36
  for c in hs.clients() do
    local subs = c.subs
    if subs and not c.closed then
      local granted = -1
      for _, s in pairs(subs) do
        if s.qos > granted and matches(s.levels, lv, dollar) then granted = s.qos end
      end
      if granted >= 0 then send_publish(c, t, payload, min(qos, granted), false) end
    end
  end
end

---------------------------------------------------------------------------
-- packets from clients: each handler gets (conn, packet, flags), where
-- packet starts with the type byte, and returns an error text to close the
-- connection for a protocol violation
---------------------------------------------------------------------------

local H = {} -- packet type -> handler

local function connack(conn, code)
  conn:send("\x20\x02\x00", char(code))
  if code ~= 0 then conn:close() end
end

H[CONNECT] = function(conn, m)
  if conn.client_id then return "a second CONNECT" end
  local name, p = unpack(">s2", m, 2)
  local level, cflags, keep
  level, cflags, keep, p = unpack(">BBI2", m, p)
  if not ((name == "MQTT" and level == 4) or (name == "MQIsdp" and level == 3)) then
    return connack(conn, 1) -- unacceptable protocol version
  end
  if cflags & 1 ~= 0 then return "reserved CONNECT flag set" end
  local id
  id, p = unpack(">s2", m, p)
  if id == "" then
    if cflags & 2 == 0 then return connack(conn, 2) end -- an id is needed to keep a session
    S.ids = S.ids + 1
    id = "hotsock-" .. S.ids
  end
  if cflags & 4 ~= 0 then
    local topic, payload
    topic, payload, p = unpack(">s2s2", m, p)
    local qos = (cflags >> 3) & 3
    if qos == 3 or not valid_topic(topic) then return "bad will" end
    conn.will = { topic = topic, payload = payload, qos = qos, retain = cflags & 32 ~= 0 }
  end
  -- a user name and password (flags 0x80, 0x40) may follow: not checked
  for c in hs.clients() do -- the same client id again: the old connection goes
    if c ~= conn and c.client_id == id and not c.closed then
      hs.log.info(("client %s connected again: closing %s"):format(id, c.peer))
      c:close()
    end
  end
  conn.client_id, conn.subs, conn.next_id = id, {}, 0
  -- keep-alive, loosely: nothing read for 1.5 times it closes (0: never)
  conn:settimeouts({ read = keep * 1500 })
  hs.log.info(("client %s connected from %s"):format(id, conn.peer))
  connack(conn, 0)
end

H[PUBLISH] = function(conn, m, flags)
  local qos, retain = (flags >> 1) & 3, flags & 1 == 1
  if qos == 3 then return "PUBLISH with QoS 3" end
  local topic, p = unpack(">s2", m, 2)
  if not valid_topic(topic) then return "bad topic name" end
  if qos > 0 then
    local id
    id, p = unpack(">I2", m, p)
    if qos == 1 then
      conn:send("\x40\x02", pack(">I2", id)) -- PUBACK
    else
      conn:send("\x50\x02", pack(">I2", id)) -- PUBREC; the client answers PUBREL
      conn.pending = conn.pending or {}
      if conn.pending[id] then return end -- resent before PUBREL: delivered already
      conn.pending[id] = true
    end
  end
  publish(topic, m:sub(p), qos, retain)
end

H[PUBREL] = function(conn, m, flags)
  if flags ~= 2 then return "bad PUBREL flags" end
  local id = unpack(">I2", m, 2)
  if conn.pending then conn.pending[id] = nil end
  conn:send("\x70\x02", pack(">I2", id)) -- PUBCOMP
end

H[PUBACK] = function() end -- nothing is resent, so nothing to forget

H[SUBSCRIBE] = function(conn, m, flags)
  if flags ~= 2 then return "bad SUBSCRIBE flags" end
  local id, p = unpack(">I2", m, 2)
  local codes, added = {}, {}
  while p <= #m do
    local f, qos
    f, qos, p = unpack(">s2B", m, p)
    if qos > 2 then return "bad requested QoS" end
    local lv = filter_levels(f)
    if lv then
      qos = min(qos, 1)
      conn.subs[f] = { levels = lv, qos = qos }
      added[#added + 1] = f
      hs.log.debug(("client %s subscribed to %s (QoS %d)"):format(conn.client_id, f, qos))
    else
      qos = 0x80 -- failure, for this filter only
    end
    codes[#codes + 1] = char(qos)
  end
  if #codes == 0 then return "SUBSCRIBE without a filter" end
  conn:send(packet(0x90, pack(">I2", id) .. table.concat(codes))) -- SUBACK
  -- then the retained messages the new filters match, flagged retained
  for _, f in ipairs(added) do
    local s = conn.subs[f]
    for topic, r in pairs(S.retained) do
      if matches(s.levels, r.levels, byte(topic) == 36) then
        send_publish(conn, pack(">s2", topic), r.payload, min(r.qos, s.qos), true)
      end
    end
  end
end

H[UNSUBSCRIBE] = function(conn, m, flags)
  if flags ~= 2 then return "bad UNSUBSCRIBE flags" end
  local id, p = unpack(">I2", m, 2)
  if p > #m then return "UNSUBSCRIBE without a filter" end
  while p <= #m do
    local f
    f, p = unpack(">s2", m, p)
    conn.subs[f] = nil
  end
  conn:send("\xb0\x02", pack(">I2", id)) -- UNSUBACK
end

H[PINGREQ] = function(conn) conn:send("\xd0\x00") end -- PINGRESP

H[DISCONNECT] = function(conn)
  conn.will = nil -- a clean goodbye: no will
  conn:close()
end

return {
  listen = "127.0.0.1:1883",
  -- a type byte, a remaining length of at most 4 varint bytes, the rest;
  -- delivered as the type byte followed by the rest
  framing = { length = "varint", header = 1, max_bytes = 4 },
  max_frame = 1024 * 1024, -- the largest packet taken (MQTT allows 256 MB)
  timeouts = { read = CONNECT_WAIT }, -- until CONNECT sets the keep-alive

  on_message = function(conn, m)
    local kind, flags = byte(m) >> 4, byte(m) & 15
    local f, why = H[kind], nil
    if not f then
      why = "unexpected " .. (NAMES[kind] or "packet type 0")
    elseif not conn.client_id and kind ~= CONNECT then
      why = NAMES[kind] .. " before CONNECT"
    else
      local ok, res = pcall(f, conn, m, flags) -- string.unpack raises on a short packet
      if ok then why = res else why = "malformed " .. NAMES[kind] .. ": " .. tostring(res) end
    end
    if why then
      hs.log.warn(("closing %s: %s"):format(conn.client_id or conn.peer, why))
      conn:close()
    end
  end,

  -- Whatever ended it, unless the client said DISCONNECT, its will goes out.
  on_close = function(conn, reason)
    if not conn.client_id then return end
    local w = conn.will
    hs.log.info(("client %s gone (%s)%s"):format(conn.client_id, reason, w and ", will published" or ""))
    if w then publish(w.topic, w.payload, w.qos, w.retain) end
  end,
}
