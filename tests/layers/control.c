/* The layering test's control: the same target builds with a header of its own layer. */
#include "session.h"
