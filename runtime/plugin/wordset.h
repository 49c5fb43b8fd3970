/* wordset.h — im.wordset: a set of whole words, matched in C.
 *
 *   local set = im.wordset{ "darn", "heck", "café" }
 *   set:find(text)  -> start, stop, word (the first listed word in text) | nil
 *   set:mask(text)  -> text with each listed word as asterisks, count     | nil
 *   #set            -> distinct words;  tostring(set) -> "wordset(3 words)"
 *
 * A word is a run of ASCII letters and digits and bytes >= 0x80 (Lua's
 * [%w\128-\255]+); matching is whole-word, ASCII case-insensitive (bytes >=
 * 0x80 compare exactly). find and mask allocate nothing unless they match. */
#ifndef HUBU_WORDSET_H
#define HUBU_WORDSET_H

#include <lua.h>

/* A lua_CFunction: arg 1, a Lua array of words (strings or numbers); returns
 * the set, a full userdata with metatable "hubu.wordset". Raises an error
 * naming the 1-based index of an entry that is not a single word. Ignores
 * upvalues. */
int hubu_wordset_new(lua_State *L);

#endif
