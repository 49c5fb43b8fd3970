/* test_pbjson.c — the JSON form of PROTOCOL.md section 9 (lib/pbjson.c): the
 * canonical names and encodings on output, what parsers must accept on input,
 * every frame type round-tripping to the same wire bytes, and refusals. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "frame.h"
#include "hubu.pb-c.h"
#include "pbjson.h"
#include "wire.h"

static char *text_of(const ProtobufCMessage *m) {
  hubu_buf b = {0};
  CHECK(hubu_pbjson_write(&b, m) == 0);
  char *s = calloc(1, hubu_buf_size(&b) + 1);
  memcpy(s, hubu_buf_head(&b), hubu_buf_size(&b));
  hubu_buf_free(&b);
  return s;
}

static void test_canonical_output(void) {
  Hubu__V1__Send s = HUBU__V1__SEND__INIT;
  s.client_id = 18446744073709551615ull;
  s.session_id = "d:alice:bob";
  uint8_t body[] = {'h', 'i', 0, 0xff};
  s.body.data = body;
  s.body.len = sizeof body;
  Hubu__V1__Send__MetaEntry e1 = HUBU__V1__SEND__META_ENTRY__INIT, e2 = HUBU__V1__SEND__META_ENTRY__INIT;
  e1.key = "lang";
  e1.value = "en";
  e2.key = "q\"uote";
  e2.value = "line\nbreak";
  Hubu__V1__Send__MetaEntry *meta[] = {&e1, &e2};
  s.meta = meta;
  s.n_meta = 2;
  char *t = text_of(&s.base);
  CHECK_EQ_STR(t,
               "{\"clientId\":\"18446744073709551615\",\"sessionId\":\"d:alice:bob\",\"body\":\"aGkA/w==\","
               "\"meta\":{\"lang\":\"en\",\"q\\\"uote\":\"line\\nbreak\"}}");
  free(t);

  Hubu__V1__SendAck a = HUBU__V1__SEND_ACK__INIT; /* defaults left out, enums by name */
  a.code = HUBU__V1__CODE__RATE_LIMITED;
  a.retry_after_ms = 250;
  a.duplicate = 1;
  t = text_of(&a.base);
  CHECK_EQ_STR(t, "{\"code\":\"RATE_LIMITED\",\"duplicate\":true,\"retryAfterMs\":250}");
  free(t);

  Hubu__V1__SendAck ok = HUBU__V1__SEND_ACK__INIT; /* OK is the default: nothing at all */
  t = text_of(&ok.base);
  CHECK_EQ_STR(t, "{}");
  free(t);

  Hubu__V1__Message m1 = HUBU__V1__MESSAGE__INIT, m2 = HUBU__V1__MESSAGE__INIT;
  m1.session_id = "g:x";
  m1.seq = 1;
  m2.session_id = "g:x";
  m2.seq = 2;
  Hubu__V1__Message *ms[] = {&m1, &m2};
  Hubu__V1__Push p = HUBU__V1__PUSH__INIT;
  p.messages = ms;
  p.n_messages = 2;
  t = text_of(&p.base);
  CHECK_EQ_STR(t, "{\"messages\":[{\"sessionId\":\"g:x\",\"seq\":\"1\"},{\"sessionId\":\"g:x\",\"seq\":\"2\"}]}");
  free(t);
}

static Hubu__V1__Send *parse_send(const char *json, char *why, size_t why_size) {
  hubu_buf b = {0};
  Hubu__V1__Send *s = NULL;
  if (hubu_pbjson_parse(&hubu__v1__send__descriptor, json, strlen(json), &b, why, why_size) == 0)
    s = hubu__v1__send__unpack(NULL, hubu_buf_size(&b), hubu_buf_head(&b));
  hubu_buf_free(&b);
  return s;
}

static void test_accepted_input(void) {
  char why[160];
  /* lowerCamelCase and proto names, numbers or strings for uint64, URL-safe unpadded base64, unknown keys, null */
  Hubu__V1__Send *s = parse_send(
      "{\"client_id\": 7, \"sessionId\": \"g:team\", \"body\": \"aGkA_w\", "
      "\"future\": {\"x\": [1]}, \"contentType\": null, \"meta\": {\"k\": \"v\"}, "
      "\"clientTimeMs\": \"1700000000000\"}",
      why, sizeof why);
  if (CHECK(s != NULL)) {
    CHECK_EQ_U64(s->client_id, 7);
    CHECK_EQ_STR(s->session_id, "g:team");
    CHECK(s->body.len == 4 && memcmp(s->body.data, "hi\0\xff", 4) == 0);
    CHECK_EQ_STR(s->content_type, "");
    CHECK(s->n_meta == 1 && strcmp(s->meta[0]->key, "k") == 0 && strcmp(s->meta[0]->value, "v") == 0);
    CHECK_EQ_U64(s->client_time_ms, 1700000000000ull);
    hubu__v1__send__free_unpacked(s, NULL);
  }
  s = parse_send("{\"clientId\": \"18446744073709551615\"}", why, sizeof why);
  if (CHECK(s != NULL)) {
    CHECK_EQ_U64(s->client_id, UINT64_MAX);
    hubu__v1__send__free_unpacked(s, NULL);
  }
  /* enum by number, repeated messages */
  hubu_buf b = {0};
  CHECK(hubu_pbjson_parse(
            &hubu__v1__sync_request__descriptor,
            "{\"requestId\":\"3\",\"known\":[{\"sessionId\":\"g:a\",\"seq\":\"5\"},{\"sessionId\":\"g:b\"}]}",
            strlen("{\"requestId\":\"3\",\"known\":[{\"sessionId\":\"g:a\",\"seq\":\"5\"},{\"sessionId\":"
                   "\"g:b\"}]}"),
            &b, why, sizeof why) == 0);
  Hubu__V1__SyncRequest *r = hubu__v1__sync_request__unpack(NULL, hubu_buf_size(&b), hubu_buf_head(&b));
  if (CHECK(r != NULL)) {
    CHECK_EQ_U64(r->request_id, 3);
    CHECK(r->n_known == 2 && r->known[0]->seq == 5 && strcmp(r->known[1]->session_id, "g:b") == 0);
    hubu__v1__sync_request__free_unpacked(r, NULL);
  }
  hubu_buf_free(&b);
  const char *err = "{\"code\": 10, \"message\": \"x\"}";
  CHECK(hubu_pbjson_parse(&hubu__v1__error__descriptor, err, strlen(err), &b, why, sizeof why) == 0);
  Hubu__V1__Error *e = hubu__v1__error__unpack(NULL, hubu_buf_size(&b), hubu_buf_head(&b));
  if (CHECK(e != NULL)) {
    CHECK(e->code == HUBU__V1__CODE__RATE_LIMITED);
    hubu__v1__error__free_unpacked(e, NULL);
  }
  hubu_buf_free(&b);
}

static void expect_refused(const ProtobufCMessageDescriptor *d, const char *json, const char *why_part) {
  hubu_buf b = {0};
  char why[160];
  int rc = hubu_pbjson_parse(d, json, strlen(json), &b, why, sizeof why);
  if (!CHECK(rc == -1))
    fprintf(stderr, "    accepted: %s\n", json);
  else if (!CHECK(strstr(why, why_part) != NULL))
    fprintf(stderr, "    why = \"%s\", want \"%s\"\n", why, why_part);
  CHECK(hubu_buf_size(&b) == 0); /* nothing half-written */
  hubu_buf_free(&b);
}

static void test_refusals(void) {
  const ProtobufCMessageDescriptor *send = &hubu__v1__send__descriptor;
  expect_refused(send, "not json", "not JSON");
  expect_refused(send, "[1,2]", "want a JSON object");
  expect_refused(send, "{\"clientId\": -1}", "out of range");
  expect_refused(send, "{\"clientId\": \"12x\"}", "not a decimal integer");
  expect_refused(send, "{\"clientId\": \"18446744073709551616\"}", "out of range");
  expect_refused(send, "{\"clientId\": 1.5}", "not an integer");
  expect_refused(send, "{\"clientId\": true}", "want an integer");
  expect_refused(send, "{\"sessionId\": 5}", "want a string");
  expect_refused(send, "{\"body\": \"a\"}", "not base64");
  expect_refused(send, "{\"body\": \"!!!!\"}", "not base64");
  expect_refused(send, "{\"meta\": [1]}", "want an object");
  expect_refused(send, "{\"meta\": {\"k\": 1}}", "want a string");
  expect_refused(send, "{\"sessionId\": \"a\\u0000b\"}", "not JSON"); /* jansson refuses NUL in strings */
  expect_refused(send, "{\"sessionId\": \"\xff\"}", "not JSON");      /* and bytes that are not UTF-8 */
  expect_refused(&hubu__v1__error__descriptor, "{\"code\": \"NOPE\"}", "unknown value");
  expect_refused(&hubu__v1__sync_request__descriptor, "{\"known\": {}}", "want an array");
  expect_refused(&hubu__v1__sync_request__descriptor, "{\"known\": [null]}", "null in an array");
  expect_refused(&hubu__v1__ping__descriptor, "{\"timeMs\": \"1\"} trailing", "not JSON");
  expect_refused(&hubu__v1__hello_ok__descriptor, "{\"heartbeatMs\": 4294967296}", "out of range");
}

/* Every frame type: binary -> JSON text -> binary gives the same message. */
static void round_trip(uint8_t type, const ProtobufCMessage *m) {
  hubu_buf bin = {0}, text = {0}, back = {0};
  CHECK(hubu_wire_append(&bin, type, m) == 0);
  CHECK(hubu_pbjson_frame_out(hubu_buf_head(&bin), hubu_buf_size(&bin), &text) == 0);
  uint8_t got = 0;
  char why[160];
  hubu_pbjson_frame_status st =
      hubu_pbjson_frame_in((const char *)hubu_buf_head(&text), hubu_buf_size(&text), &back, &got, why, sizeof why);
  if (!CHECK(st == HUBU_PBJSON_FRAME_OK && got == type))
    fprintf(stderr, "    %s: %.*s (%s)\n", hubu_frame_type_name(type), (int)hubu_buf_size(&text),
            (const char *)hubu_buf_head(&text), why);
  else if (!CHECK(hubu_buf_size(&back) == hubu_buf_size(&bin) &&
                  memcmp(hubu_buf_head(&back), hubu_buf_head(&bin), hubu_buf_size(&bin)) == 0))
    fprintf(stderr, "    %s differs after the round trip: %.*s\n", hubu_frame_type_name(type),
            (int)hubu_buf_size(&text), (const char *)hubu_buf_head(&text));
  hubu_buf_free(&bin);
  hubu_buf_free(&text);
  hubu_buf_free(&back);
}

static void test_round_trips(void) {
  Hubu__V1__Hello h = HUBU__V1__HELLO__INIT;
  h.protocol_version = 1;
  h.user_id = "alice";
  h.device_id = "web-1";
  h.token = "v1.alice.99.ab";
  round_trip(HUBU_FRAME_HELLO, &h.base);
  Hubu__V1__HelloOk ok = HUBU__V1__HELLO_OK__INIT;
  ok.conn_id = 1ull << 60;
  ok.heartbeat_ms = 30000;
  ok.last_client_id = 42;
  ok.max_frame = 1 << 20;
  ok.server = "hubud";
  round_trip(HUBU_FRAME_HELLO_OK, &ok.base);
  Hubu__V1__Ping ping = HUBU__V1__PING__INIT;
  ping.time_ms = 123;
  round_trip(HUBU_FRAME_PING, &ping.base);
  round_trip(HUBU_FRAME_PONG, &ping.base);
  Hubu__V1__Error er = HUBU__V1__ERROR__INIT;
  er.code = HUBU__V1__CODE__BAD_BODY;
  er.message = "x";
  er.frame_type = 16;
  round_trip(HUBU_FRAME_ERROR, &er.base);
  Hubu__V1__GoAway ga = HUBU__V1__GO_AWAY__INIT;
  ga.code = HUBU__V1__CODE__KICKED;
  ga.reconnect_after_ms = 5;
  round_trip(HUBU_FRAME_GOAWAY, &ga.base);
  Hubu__V1__Send s = HUBU__V1__SEND__INIT;
  s.client_id = 9;
  s.session_id = "d:a:b";
  uint8_t body[300];
  for (size_t i = 0; i < sizeof body; i++) body[i] = (uint8_t)(i * 7);
  s.body.data = body;
  s.body.len = sizeof body;
  s.content_type = "application/octet-stream";
  round_trip(HUBU_FRAME_SEND, &s.base);
  Hubu__V1__SendAck sa = HUBU__V1__SEND_ACK__INIT;
  sa.client_id = 9;
  sa.code = HUBU__V1__CODE__STALE;
  sa.seq = 77;
  sa.msg_id = UINT64_MAX;
  sa.reason = "ünïcode ✓";
  round_trip(HUBU_FRAME_SEND_ACK, &sa.base);
  Hubu__V1__Message m = HUBU__V1__MESSAGE__INIT;
  m.session_id = "g:x";
  m.seq = 3;
  m.sender = "bob";
  m.body.data = body;
  m.body.len = 1;
  Hubu__V1__Message__MetaEntry me = HUBU__V1__MESSAGE__META_ENTRY__INIT;
  me.key = "a";
  me.value = "b";
  Hubu__V1__Message__MetaEntry *mes[] = {&me};
  m.meta = mes;
  m.n_meta = 1;
  Hubu__V1__Message *ms[] = {&m, &m};
  Hubu__V1__Push pu = HUBU__V1__PUSH__INIT;
  pu.messages = ms;
  pu.n_messages = 2;
  round_trip(HUBU_FRAME_PUSH, &pu.base);
  Hubu__V1__Cursor c = HUBU__V1__CURSOR__INIT;
  c.session_id = "g:x";
  c.seq = 3;
  Hubu__V1__Cursor *cs[] = {&c};
  Hubu__V1__DeliverAck da = HUBU__V1__DELIVER_ACK__INIT;
  da.cursors = cs;
  da.n_cursors = 1;
  round_trip(HUBU_FRAME_DELIVER_ACK, &da.base);
  Hubu__V1__SyncRequest sr = HUBU__V1__SYNC_REQUEST__INIT;
  sr.request_id = 1;
  sr.known = cs;
  sr.n_known = 1;
  round_trip(HUBU_FRAME_SYNC, &sr.base);
  Hubu__V1__SessionState st = HUBU__V1__SESSION_STATE__INIT;
  st.session_id = "g:x";
  st.max_seq = 10;
  st.kind = "group";
  Hubu__V1__SessionState *sts[] = {&st};
  Hubu__V1__SyncResult sres = HUBU__V1__SYNC_RESULT__INIT;
  sres.sessions = sts;
  sres.n_sessions = 1;
  round_trip(HUBU_FRAME_SYNC_RESULT, &sres.base);
  Hubu__V1__PullRequest pr = HUBU__V1__PULL_REQUEST__INIT;
  pr.session_id = "g:x";
  pr.after_seq = 2;
  pr.limit = 100;
  round_trip(HUBU_FRAME_PULL, &pr.base);
  Hubu__V1__PullResult pres = HUBU__V1__PULL_RESULT__INIT;
  pres.code = HUBU__V1__CODE__FORBIDDEN;
  pres.messages = ms;
  pres.n_messages = 1;
  pres.has_more = 1;
  round_trip(HUBU_FRAME_PULL_RESULT, &pres.base);
  Hubu__V1__PullHint ph = HUBU__V1__PULL_HINT__INIT;
  ph.session_id = "g:x";
  ph.max_seq = 4;
  round_trip(HUBU_FRAME_PULL_HINT, &ph.base);
  Hubu__V1__Call call = HUBU__V1__CALL__INIT;
  call.method = "group.create";
  call.payload.data = (uint8_t *)"{\"group\":\"g:x\"}";
  call.payload.len = 15;
  round_trip(HUBU_FRAME_CALL, &call.base);
  Hubu__V1__CallResult cr = HUBU__V1__CALL_RESULT__INIT;
  cr.code = HUBU__V1__CODE__NOT_FOUND;
  round_trip(HUBU_FRAME_CALL_RESULT, &cr.base);
  Hubu__V1__Event ev = HUBU__V1__EVENT__INIT;
  ev.name = "typing";
  ev.sender = "bob";
  round_trip(HUBU_FRAME_EVENT, &ev.base);
}

static void test_frames_in(void) {
  hubu_buf b = {0};
  uint8_t type = 0;
  char why[160];
  const char *t = "{\"type\": \"NOPE\", \"body\": {}}";
  CHECK(hubu_pbjson_frame_in(t, strlen(t), &b, &type, why, sizeof why) == HUBU_PBJSON_FRAME_UNKNOWN_TYPE);
  CHECK(type == 0 && hubu_buf_size(&b) == HUBU_FRAME_HEADER_SIZE); /* an empty frame of type 0 */
  hubu_buf_free(&b);
  t = "{\"body\": {}}";
  CHECK(hubu_pbjson_frame_in(t, strlen(t), &b, &type, why, sizeof why) == HUBU_PBJSON_FRAME_BAD);
  t = "\"SEND\"";
  CHECK(hubu_pbjson_frame_in(t, strlen(t), &b, &type, why, sizeof why) == HUBU_PBJSON_FRAME_BAD);
  t = "{\"type\": \"SEND\", \"body\": {\"clientId\": \"x\"}}";
  CHECK(hubu_pbjson_frame_in(t, strlen(t), &b, &type, why, sizeof why) == HUBU_PBJSON_FRAME_BAD_BODY);
  CHECK(type == HUBU_FRAME_SEND && hubu_buf_size(&b) == 0);
  t = "{\"type\": \"SEND\", \"body\": 5}";
  CHECK(hubu_pbjson_frame_in(t, strlen(t), &b, &type, why, sizeof why) == HUBU_PBJSON_FRAME_BAD_BODY);
  t = "{\"type\": \"PING\"}"; /* no body: the defaults */
  CHECK(hubu_pbjson_frame_in(t, strlen(t), &b, &type, why, sizeof why) == HUBU_PBJSON_FRAME_OK);
  CHECK(type == HUBU_FRAME_PING && hubu_buf_size(&b) == HUBU_FRAME_HEADER_SIZE);
  hubu_buf_free(&b);
}

static void test_base64(void) {
  uint8_t all[256], dec[400];
  for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
  for (size_t n = 0; n <= 256; n += 1) {
    hubu_buf b = {0};
    CHECK(hubu_base64_append(&b, all, n) == 0);
    CHECK(hubu_buf_size(&b) == (n + 2) / 3 * 4);
    long got = hubu_base64_decode((const char *)hubu_buf_head(&b), hubu_buf_size(&b), dec);
    CHECK(got == (long)n && memcmp(dec, all, n) == 0);
    hubu_buf_free(&b);
  }
  CHECK(hubu_base64_decode("aGk=", 4, dec) == 2);
  CHECK(hubu_base64_decode("aGl=", 4, dec) == -1); /* trailing bits set */
  CHECK(hubu_base64_decode("a", 1, dec) == -1);
  CHECK(hubu_base64_decode("a b=", 4, dec) == -1);
}

int main(int argc, char **argv) {
  (void)argc;
  test_canonical_output();
  test_accepted_input();
  test_refusals();
  test_round_trips();
  test_frames_in();
  test_base64();
  return check_summary(argv[0]);
}
