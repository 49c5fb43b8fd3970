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

-- The list, compiled once into a set that C matches (im.wordset): one pass
-- over the body, whole words, nothing allocated unless a word is on the list.
local ok, banned = pcall(im.wordset, words)
if not ok then -- "option words: entry N is not a single word"
  error("option words: " .. (tostring(banned):match("entry %d+ .*$") or tostring(banned)), 0)
end

local REASON = "moderation: the message contains a word on the blocked-words list"

plugin:hook("message.send", function(ev)
  local ct = ev.content_type
  if ct ~= "" and ct:sub(1, 5) ~= "text/" then return end
  if mode == "reject" then
    if banned:find(ev.body) then ev:reject("REJECTED", REASON) end
  else
    local masked = banned:mask(ev.body) -- each word: one * per UTF-8 character
    if masked then ev:rewrite{ body = masked } end
  end
end)
