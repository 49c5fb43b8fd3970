/* Built only by the layering test: core including a net header must not compile. */
#include "session.h"
#include "conn.h"
