/* Built only by the layering test: core including a net header must not compile. */
#include "conn.h"
#include "session.h"
