/* core_presence.c — who is online (runtime/core/presence.c, core.c): a
 * user's peers are listed while attached and the user is forgotten with the
 * last one; a peer is found only by its own user and conn_id; a kick reaches
 * only authenticated peers, with GOAWAY KICKED, even when a GOAWAY unlinks
 * the peer on the spot; HELLO_OK attaches and closing detaches. */
#include <stdlib.h>
#include <string.h>

#include "core_fixture.h"
#include "messaging.h"
#include "presence.h"

static int listed(hubu_core *core, const char *user, const hubu_peer *p) {
  for (hubu_peer *q = hubu_core_peers_of(core, user); q; q = q->user_next)
    if (q == p) return 1;
  return 0;
}

static size_t peer_count(hubu_core *core, const char *user) {
  size_t n = 0;
  for (hubu_peer *q = hubu_core_peers_of(core, user); q; q = q->user_next) n++;
  return n;
}

/* tp_init, then attached as HELLO_OK would (state as given). */
static void attached_peer(core_fixture *fx, test_peer *tp, const char *user, const char *device, uint8_t state) {
  tp_init(fx, tp, user, device);
  tp->peer.state = state;
  if (CHECK_EQ_U64(fx->core.directory->ops->attach(fx->core.directory, &tp->peer), 0)) tp->peer.attached = 1;
}

static void attach_lists_a_users_peers_and_detach_forgets_the_user(void) {
  core_fixture fx;
  test_peer a1, a2, b1;
  if (fx_open(&fx, NULL) != 0) goto out;
  CHECK(hubu_core_peers_of(&fx.core, "alice") == NULL);
  attached_peer(&fx, &a1, "alice", "phone", HUBU_PEER_READY);
  attached_peer(&fx, &a2, "alice", "laptop", HUBU_PEER_READY);
  attached_peer(&fx, &b1, "bob", "phone", HUBU_PEER_READY);
  CHECK_EQ_U64(peer_count(&fx.core, "alice"), 2);
  CHECK_EQ_U64(peer_count(&fx.core, "bob"), 1);
  CHECK(listed(&fx.core, "alice", &a1.peer) && listed(&fx.core, "alice", &a2.peer));
  CHECK(!listed(&fx.core, "alice", &b1.peer));
  CHECK_EQ_U64(fx.core.directory->ops->users(fx.core.directory), 2);

  fx.core.directory->ops->detach(fx.core.directory, &a1.peer);
  a1.peer.attached = 0;
  CHECK_EQ_U64(peer_count(&fx.core, "alice"), 1);
  CHECK(!listed(&fx.core, "alice", &a1.peer));
  CHECK(a1.peer.user_next == NULL);
  fx.core.directory->ops->detach(fx.core.directory, &a1.peer); /* twice: nothing more happens */
  CHECK_EQ_U64(peer_count(&fx.core, "alice"), 1);
  fx.core.directory->ops->detach(fx.core.directory, &a2.peer);
  a2.peer.attached = 0;
  CHECK(hubu_core_peers_of(&fx.core, "alice") == NULL); /* the last peer took the user with it */
  CHECK_EQ_U64(peer_count(&fx.core, "bob"), 1);
  CHECK_EQ_U64(fx.core.directory->ops->users(fx.core.directory), 1);
  tp_close(&a1);
  tp_close(&a2);
  tp_close(&b1);
  CHECK(fx.core.directory->ops->users(fx.core.directory) == 0);
out:
  fx_close(&fx);
}

static void peer_find_needs_the_users_own_conn_id(void) {
  core_fixture fx;
  test_peer a1, a2, b1;
  if (fx_open(&fx, NULL) != 0) goto out;
  attached_peer(&fx, &a1, "alice", "phone", HUBU_PEER_READY);
  attached_peer(&fx, &a2, "alice", "laptop", HUBU_PEER_READY);
  attached_peer(&fx, &b1, "bob", "phone", HUBU_PEER_READY);
  CHECK(hubu_core_peer_find(&fx.core, "alice", a1.peer.id) == &a1.peer);
  CHECK(hubu_core_peer_find(&fx.core, "alice", a2.peer.id) == &a2.peer);
  CHECK(hubu_core_peer_find(&fx.core, "bob", b1.peer.id) == &b1.peer);
  CHECK(hubu_core_peer_find(&fx.core, "alice", b1.peer.id) == NULL); /* bob's conn under alice */
  CHECK(hubu_core_peer_find(&fx.core, "carol", a1.peer.id) == NULL);
  CHECK(hubu_core_peer_find(&fx.core, "alice", 999999) == NULL);
  tp_close(&a1); /* a completion arriving after the close finds nothing */
  CHECK(hubu_core_peer_find(&fx.core, "alice", a1.peer.id) == NULL);
  CHECK(hubu_core_peer_find(&fx.core, "alice", a2.peer.id) == &a2.peer);
  tp_close(&a2);
  tp_close(&b1);
out:
  fx_close(&fx);
}

static void kick_sends_kicked_to_ready_peers_only(void) {
  core_fixture fx;
  test_peer p[5], bob;
  static const uint8_t states[5] = {HUBU_PEER_HELLO_WAIT, HUBU_PEER_AUTHING, HUBU_PEER_READY, HUBU_PEER_READY,
                                    HUBU_PEER_CLOSING};
  if (fx_open(&fx, NULL) != 0) goto out;
  char device[16];
  for (int i = 0; i < 5; i++) {
    snprintf(device, sizeof device, "d%d", i);
    attached_peer(&fx, &p[i], "alice", device, states[i]);
  }
  attached_peer(&fx, &bob, "bob", "phone", HUBU_PEER_READY);

  CHECK_EQ_U64(hubu_core_kick(&fx.core, "alice", "policy"), 2);
  for (int i = 0; i < 5; i++) {
    int ready = states[i] == HUBU_PEER_READY;
    CHECK_EQ_U64(p[i].goaways, ready);
    if (ready) {
      CHECK_EQ_U64(p[i].goaway_code, HUBU__V1__CODE__KICKED);
      CHECK_EQ_STR(p[i].goaway_reason, "policy");
      CHECK_EQ_U64(tp_count(&p[i], HUBU_FRAME_GOAWAY), 1);
    }
  }
  CHECK_EQ_U64(bob.goaways, 0);
  CHECK_EQ_U64(hubu_core_kick(&fx.core, "carol", "nobody"), 0);
  /* The kicked peers are closing now: a second kick finds none ready. */
  CHECK_EQ_U64(hubu_core_kick(&fx.core, "alice", "again"), 0);
  CHECK_EQ_U64(p[2].goaways + p[3].goaways, 2);
  for (int i = 0; i < 5; i++) tp_close(&p[i]);
  tp_close(&bob);
out:
  fx_close(&fx);
}

static void kick_reaches_every_peer_when_goaway_unlinks_it(void) {
  core_fixture fx;
  test_peer p[3];
  if (fx_open(&fx, NULL) != 0) goto out;
  char device[16];
  for (int i = 0; i < 3; i++) {
    snprintf(device, sizeof device, "d%d", i);
    attached_peer(&fx, &p[i], "alice", device, HUBU_PEER_READY);
    p[i].detach_on_goaway = 1;
  }
  CHECK_EQ_U64(hubu_core_kick(&fx.core, "alice", "bye"), 3);
  for (int i = 0; i < 3; i++) CHECK_EQ_U64(p[i].goaways, 1);
  CHECK(hubu_core_peers_of(&fx.core, "alice") == NULL);
  for (int i = 0; i < 3; i++) tp_close(&p[i]);
out:
  fx_close(&fx);
}

static void hello_ok_attaches_and_close_detaches(void) {
  core_fixture fx;
  test_peer a, b;
  if (fx_open(&fx, NULL) != 0) goto out;
  tp_init(&fx, &a, "alice", "phone");
  hubu_messaging_hello(&a.peer);
  CHECK(!a.peer.attached); /* HELLO_OK waits for the device: not online yet */
  CHECK_EQ_U64(hubu_core_kick(&fx.core, "alice", "early"), 0);
  fx_settle(&fx);
  CHECK(a.peer.attached);
  CHECK(hubu_core_peer_find(&fx.core, "alice", a.peer.id) == &a.peer);
  if (tp_connect(&fx, &b, "alice", "laptop") == 0) CHECK_EQ_U64(peer_count(&fx.core, "alice"), 2);
  tp_close(&a);
  CHECK(hubu_core_peer_find(&fx.core, "alice", a.peer.id) == NULL);
  CHECK_EQ_U64(peer_count(&fx.core, "alice"), 1);
  CHECK_EQ_U64(hubu_core_kick(&fx.core, "alice", "late"), 1);
  CHECK_EQ_U64(b.goaway_code, HUBU__V1__CODE__KICKED);
  tp_close(&b);
  CHECK(hubu_core_peers_of(&fx.core, "alice") == NULL);
out:
  fx_close(&fx);
}

static const core_case cases[] = {
    CORE_CASE(attach_lists_a_users_peers_and_detach_forgets_the_user),
    CORE_CASE(peer_find_needs_the_users_own_conn_id),
    CORE_CASE(kick_sends_kicked_to_ready_peers_only),
    CORE_CASE(kick_reaches_every_peer_when_goaway_unlinks_it),
    CORE_CASE(hello_ok_attaches_and_close_detaches),
};

int main(int argc, char **argv) { return core_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }
