/* core_session.c — session ids and members (runtime/core/session.c) as pure
 * functions over plain structs: which ids are well formed and of what kind,
 * how a direct id names its two users, and a group's member list staying
 * sorted and free of duplicates. Pure functions: no loop, no store. */
#include <stdlib.h>
#include <string.h>

#include "core_fixture.h"
#include "session.h"

static int kind_of(const char *id) { return hubu_session_id_check(id, strlen(id)); }

static void direct_session_id_requires_sorted_users(void) {
  CHECK_EQ_U64(kind_of("d:alice:bob"), HUBU_SESSION_DIRECT);
  CHECK_EQ_U64(kind_of("d:bob:alice"), (uint64_t)-1);       /* a > b */
  CHECK_EQ_U64(kind_of("d:alice:alice"), (uint64_t)-1);     /* a == b: nobody's chat with themselves */
  CHECK_EQ_U64(kind_of("d:al:alice"), HUBU_SESSION_DIRECT); /* a prefix sorts first */
  CHECK_EQ_U64(kind_of("d:alice:al"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("d:Bob:alice"), HUBU_SESSION_DIRECT); /* bytewise: 'B' (0x42) < 'a' (0x61) */
  CHECK_EQ_U64(kind_of("d:alice:Bob"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("d:1:2"), HUBU_SESSION_DIRECT);
}

static void direct_session_id_requires_two_valid_user_ids(void) {
  CHECK_EQ_U64(kind_of("d:alice"), (uint64_t)-1);  /* one user */
  CHECK_EQ_U64(kind_of("d::bob"), (uint64_t)-1);   /* empty a */
  CHECK_EQ_U64(kind_of("d:alice:"), (uint64_t)-1); /* empty b */
  CHECK_EQ_U64(kind_of("d:a:b:c"), (uint64_t)-1);  /* ':' is not in the id alphabet */
  CHECK_EQ_U64(kind_of("d:al ice:bob"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("d:alice:b/b"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("d:a.l-i_c@e:bob"), HUBU_SESSION_DIRECT); /* [A-Za-z0-9_.@-] */
  char id[160], a64[65], a65[66];
  memset(a64, 'a', 64), a64[64] = '\0';
  memset(a65, 'a', 65), a65[65] = '\0';
  snprintf(id, sizeof id, "d:%s:b", a64); /* a 64-byte user id is the longest */
  CHECK_EQ_U64(kind_of(id), HUBU_SESSION_DIRECT);
  snprintf(id, sizeof id, "d:%s:b", a65);
  CHECK_EQ_U64(kind_of(id), (uint64_t)-1);
}

static void group_session_id_is_g_and_a_valid_name(void) {
  CHECK_EQ_U64(kind_of("g:team"), HUBU_SESSION_GROUP);
  CHECK_EQ_U64(kind_of("g:t"), HUBU_SESSION_GROUP);
  CHECK_EQ_U64(kind_of("g:"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("g:te am"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("g:a:b"), (uint64_t)-1);
  char id[80];
  memset(id, 'x', sizeof id);
  memcpy(id, "g:", 2);
  CHECK_EQ_U64(hubu_session_id_check(id, 2 + 64), HUBU_SESSION_GROUP);
  CHECK_EQ_U64(hubu_session_id_check(id, 2 + 65), (uint64_t)-1);
}

static void custom_session_id_is_prefix_colon_rest_of_printable_ascii(void) {
  CHECK_EQ_U64(kind_of("room:42"), HUBU_SESSION_CUSTOM);
  CHECK_EQ_U64(kind_of("t:x"), HUBU_SESSION_CUSTOM);
  CHECK_EQ_U64(kind_of("ch:a:b:c"), HUBU_SESSION_CUSTOM); /* more colons are the plugin's business */
  CHECK_EQ_U64(kind_of("x:~!{}"), HUBU_SESSION_CUSTOM);   /* 0x21..0x7e */
  CHECK_EQ_U64(kind_of("nocolon"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of(":x"), (uint64_t)-1);    /* empty prefix */
  CHECK_EQ_U64(kind_of("room:"), (uint64_t)-1); /* empty rest */
  CHECK_EQ_U64(kind_of("r:a b"), (uint64_t)-1); /* space */
  CHECK_EQ_U64(kind_of("r:a\tb"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("r:\x7f"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("r:\xc3\xa9"), (uint64_t)-1);              /* UTF-8 is not printable ASCII */
  CHECK_EQ_U64(hubu_session_id_check("r:a\0b", 5), (uint64_t)-1); /* a NUL inside the length */
}

static void session_id_is_3_to_128_bytes_of_the_given_length(void) {
  CHECK_EQ_U64(kind_of(""), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("a:"), (uint64_t)-1);
  CHECK_EQ_U64(kind_of("a:b"), HUBU_SESSION_CUSTOM);
  char id[HUBU_SESSION_ID_MAX + 2];
  memset(id, 'r', sizeof id);
  id[1] = ':';
  CHECK_EQ_U64(hubu_session_id_check(id, HUBU_SESSION_ID_MAX), HUBU_SESSION_CUSTOM);
  CHECK_EQ_U64(hubu_session_id_check(id, HUBU_SESSION_ID_MAX + 1), (uint64_t)-1);
  /* Only len bytes are read: what follows them does not count. */
  const char *longer = "d:alice:bob and more";
  CHECK_EQ_U64(hubu_session_id_check(longer, 11), HUBU_SESSION_DIRECT);
  CHECK_EQ_U64(hubu_session_id_check("g:team!", 6), HUBU_SESSION_GROUP);
}

static void direct_split_and_has_name_exactly_the_two_users(void) {
  char a[65], b[65];
  CHECK_EQ_U64(hubu_session_direct_split("d:alice:bob", a, b), 0);
  CHECK_EQ_STR(a, "alice");
  CHECK_EQ_STR(b, "bob");
  CHECK_EQ_U64(hubu_session_direct_split("g:team", a, b), (uint64_t)-1);
  CHECK_EQ_U64(hubu_session_direct_split("d:alice", a, b), (uint64_t)-1);
  char id[160], u65[66];
  memset(u65, 'u', 65), u65[65] = '\0';
  snprintf(id, sizeof id, "d:%s:zed", u65); /* would overflow a[65] */
  CHECK_EQ_U64(hubu_session_direct_split(id, a, b), (uint64_t)-1);
  snprintf(id, sizeof id, "d:alice:%s", u65);
  CHECK_EQ_U64(hubu_session_direct_split(id, a, b), (uint64_t)-1);

  CHECK(hubu_session_direct_has("d:alice:bob", "alice"));
  CHECK(hubu_session_direct_has("d:alice:bob", "bob"));
  CHECK(!hubu_session_direct_has("d:alice:bob", "ali"));
  CHECK(!hubu_session_direct_has("d:alice:bob", "alicea"));
  CHECK(!hubu_session_direct_has("d:alice:bob", "bo"));
  CHECK(!hubu_session_direct_has("d:alice:bob", "bobby"));
  CHECK(!hubu_session_direct_has("d:alice:bob", "carol"));
  CHECK(!hubu_session_direct_has("d:alice:bob", ""));
  CHECK(!hubu_session_direct_has("d:alice:bob", "alice:bob"));
}

/* A group session as the store would have loaded it, with no members yet. */
static hubu_session group(const char *id) {
  hubu_session s;
  memset(&s, 0, sizeof s);
  s.id = (char *)id;
  s.kind = HUBU_SESSION_GROUP;
  s.loaded = s.exists = 1;
  return s;
}

static int members_sorted_unique(const hubu_session *s) {
  for (size_t i = 1; i < s->n_members; i++)
    if (strcmp(s->members[i - 1], s->members[i]) >= 0) return 0;
  return 1;
}

static void group_members_stay_sorted_and_unique(void) {
  hubu_session s = group("g:team");
  CHECK(!hubu_session_is_member(&s, "alice")); /* empty */
  const char *adds[] = {"carol", "alice", "dave", "bob", "alice", "Zed", "carol", "a"};
  for (size_t i = 0; i < sizeof adds / sizeof adds[0]; i++) {
    CHECK_EQ_U64(hubu_session_add_member(&s, adds[i]), 0);
    CHECK(members_sorted_unique(&s));
    CHECK(hubu_session_is_member(&s, adds[i]));
  }
  const char *want[] = {"Zed", "a", "alice", "bob", "carol", "dave"};
  if (CHECK_EQ_U64(s.n_members, 6))
    for (size_t i = 0; i < 6; i++) CHECK_EQ_STR(s.members[i], want[i]);
  CHECK(!hubu_session_is_member(&s, "zed")); /* bytewise, case counts */
  CHECK(!hubu_session_is_member(&s, "al"));
  CHECK(!hubu_session_is_member(&s, "erin"));

  hubu_session_remove_member(&s, "bob");
  hubu_session_remove_member(&s, "erin"); /* not a member: nothing changes */
  CHECK_EQ_U64(s.n_members, 5);
  CHECK(members_sorted_unique(&s));
  CHECK(!hubu_session_is_member(&s, "bob"));
  CHECK(hubu_session_is_member(&s, "carol"));
  CHECK(hubu_session_is_member(&s, "Zed"));
  CHECK(hubu_session_is_member(&s, "dave"));

  hubu_member_names direct;
  const char *const *list = NULL;
  CHECK_EQ_U64(hubu_session_member_list(&s, &direct, &list), 5);
  CHECK(list == (const char *const *)s.members);

  const char *rm[] = {"dave", "Zed", "alice", "a", "carol"};
  for (size_t i = 0; i < 5; i++) hubu_session_remove_member(&s, rm[i]);
  CHECK_EQ_U64(s.n_members, 0);
  CHECK(!hubu_session_is_member(&s, "carol"));
  CHECK_EQ_U64(hubu_session_add_member(&s, "erin"), 0); /* the array grows again after emptying */
  CHECK(hubu_session_is_member(&s, "erin"));
  hubu_session_remove_member(&s, "erin");
  free(s.members);
}

static void direct_member_list_is_its_two_users(void) {
  hubu_session s;
  memset(&s, 0, sizeof s);
  s.id = "d:alice:bob";
  s.kind = HUBU_SESSION_DIRECT;
  hubu_member_names direct;
  const char *const *list = NULL;
  if (CHECK_EQ_U64(hubu_session_member_list(&s, &direct, &list), 2)) {
    CHECK_EQ_STR(list[0], "alice");
    CHECK_EQ_STR(list[1], "bob");
  }
  CHECK(hubu_session_is_member(&s, "alice"));
  CHECK(hubu_session_is_member(&s, "bob"));
  CHECK(!hubu_session_is_member(&s, "carol"));
  /* The id decides: a direct session's members are not a list anyone edits. */
  CHECK_EQ_U64(hubu_session_add_member(&s, "bob"), 0);
  CHECK_EQ_U64(s.n_members, 0);
}

static const core_case cases[] = {
    CORE_CASE(direct_session_id_requires_sorted_users),
    CORE_CASE(direct_session_id_requires_two_valid_user_ids),
    CORE_CASE(group_session_id_is_g_and_a_valid_name),
    CORE_CASE(custom_session_id_is_prefix_colon_rest_of_printable_ascii),
    CORE_CASE(session_id_is_3_to_128_bytes_of_the_given_length),
    CORE_CASE(direct_split_and_has_name_exactly_the_two_users),
    CORE_CASE(group_members_stay_sorted_and_unique),
    CORE_CASE(direct_member_list_is_its_two_users),
};

int main(int argc, char **argv) { return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }
