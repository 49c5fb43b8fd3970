/* clock.h — the wall clock, in one place, for timestamps on the wire
 * (server_time_ms, PING), tokens' expiry and msg_ids. Durations and timers
 * use the loop's monotonic uv_now instead. */
#ifndef HUBU_CLOCK_H
#define HUBU_CLOCK_H

#include <stdint.h>

/* Wall clock in milliseconds since the epoch. */
uint64_t hubu_now_ms(void);

#endif
