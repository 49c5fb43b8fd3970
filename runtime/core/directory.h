/* directory.h — who is online where: user -> the peers that serve them. One
 * node keeps its own table (core/presence.c, the default); cluster mode puts
 * a directory shared through Redis behind the same functions, which also
 * knows the users' peers on other nodes. Core asks it for the local peers
 * of a user when it delivers, kicks, or finds a connection again. */
#ifndef HUBU_CORE_DIRECTORY_H
#define HUBU_CORE_DIRECTORY_H

#include <stddef.h>

typedef struct hubu_peer hubu_peer;
typedef struct hubu_directory hubu_directory;

typedef struct hubu_directory_ops {
  /* p is authenticated (HELLO_OK): list it under p->user. 0, or -1 when
   * memory runs out (p stays unlisted). */
  int (*attach)(hubu_directory *d, hubu_peer *p);
  /* p goes away; a peer not listed is ignored. */
  void (*detach)(hubu_directory *d, hubu_peer *p);
  /* This node's listed peers of user, linked through user_next; NULL: none. */
  hubu_peer *(*peers_of)(hubu_directory *d, const char *user);
  /* How many users have a listed peer here (metrics). */
  size_t (*users)(hubu_directory *d);
  void (*free)(hubu_directory *d);
} hubu_directory_ops;

struct hubu_directory {
  const hubu_directory_ops *ops;
};

/* The single node's directory: a hash of users, each with its peers. */
hubu_directory *hubu_directory_local_new(void);

#endif
