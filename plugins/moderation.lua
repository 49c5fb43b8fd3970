--% summary: word-list moderation: rejects or masks messages that contain a listed word
--% version: 1
--% priority: 50
--% failure: open
-- Runs in message.send at priority 50, after ratelimit (100). Whole words,
-- ASCII case-insensitive; a word is a run of letters, digits and UTF-8 bytes.
-- Only text is moderated: content types "" and text/*.
--   mode "reject": REJECTED, with a reason that names the rule, never the word
--   mode "mask":   the word becomes asterisks, one per character
local words = plugin:option_list("words", { "darn", "heck", "frak", "smeg", "gorram" })
local mode = plugin:option_string("mode", "reject")
assert(mode == "reject" or mode == "mask", "option mode: must be \"reject\" or \"mask\"")

local WORD = "[%w\128-\255]+"
local EACH_WORD = "()(" .. WORD .. ")()" -- start, word, end

-- The list, compiled once into a set of lowercase words.
local banned = {}
for i, w in ipairs(words) do
  w = tostring(w):lower()
  assert(w:match("^" .. WORD .. "$"), ("option words: entry %d is not a single word"):format(i))
  banned[w] = true
end

-- Characters of a UTF-8 word: its bytes minus its continuation bytes.
local function stars(w)
  local _, continuation = w:gsub("[\128-\191]", "")
  return ("*"):rep(#w - continuation)
end

plugin:hook("message.send", function(ev)
  local ct = ev.content_type
  if ct ~= "" and ct:sub(1, 5) ~= "text/" then return end
  local body = ev.body
  local lower = body:lower() -- same length and byte positions as body
  local out, last = nil, 1
  for from, w, to in lower:gmatch(EACH_WORD) do -- one pass over the body
    if banned[w] then
      if mode == "reject" then
        ev:reject("REJECTED", "moderation: the message contains a word on the blocked-words list")
        return
      end
      out = out or {}
      out[#out + 1] = body:sub(last, from - 1)
      out[#out + 1] = stars(w)
      last = to
    end
  end
  if out then
    out[#out + 1] = body:sub(last)
    ev:rewrite{ body = table.concat(out) }
  end
end)
