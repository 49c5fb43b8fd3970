/* check.h — the whole unit-test "framework": CHECK macros that print file:line
 * and the failing expression (with values for the _EQ forms), count failures,
 * and keep going. A test's main ends with `return check_summary(argv[0]);`,
 * which is nonzero when any check failed or when no check ran at all. */
#ifndef HUBU_TEST_CHECK_H
#define HUBU_TEST_CHECK_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static unsigned long check_count;
static unsigned long check_failures;

/* Prints at most this many failures, so a loop of 10,000 failing checks stays readable. */
#define CHECK_PRINT_LIMIT 50

static inline int check_fail_(const char *file, int line, const char *what) {
  check_failures++;
  if (check_failures <= CHECK_PRINT_LIMIT) fprintf(stderr, "%s:%d: CHECK failed: %s\n", file, line, what);
  return 0;
}

/* Each macro evaluates to 1 when the check passed, 0 when it failed. */
#define CHECK(cond) (check_count++, (cond) ? 1 : check_fail_(__FILE__, __LINE__, #cond))

#define CHECK_EQ_U64(a, b) \
  (check_count++, check_eq_u64_((uint64_t)(a), (uint64_t)(b), __FILE__, __LINE__, #a " == " #b))
static inline int check_eq_u64_(uint64_t a, uint64_t b, const char *file, int line, const char *what) {
  if (a == b) return 1;
  check_fail_(file, line, what);
  if (check_failures <= CHECK_PRINT_LIMIT)
    fprintf(stderr, "    left  = %" PRIu64 " (0x%" PRIx64 ")\n    right = %" PRIu64 " (0x%" PRIx64 ")\n", a, a, b, b);
  return 0;
}

#define CHECK_EQ_STR(a, b) (check_count++, check_eq_str_((a), (b), __FILE__, __LINE__, #a " == " #b))
static inline int check_eq_str_(const char *a, const char *b, const char *file, int line, const char *what) {
  if (a && b && strcmp(a, b) == 0) return 1;
  check_fail_(file, line, what);
  if (check_failures <= CHECK_PRINT_LIMIT)
    fprintf(stderr, "    left  = \"%s\"\n    right = \"%s\"\n", a ? a : "(null)", b ? b : "(null)");
  return 0;
}

#define CHECK_EQ_MEM(a, b, n) (check_count++, check_eq_mem_((a), (b), (n), __FILE__, __LINE__, #a " == " #b))
static inline int check_eq_mem_(const void *a, const void *b, size_t n, const char *file, int line, const char *what) {
  if (n == 0 || (a && b && memcmp(a, b, n) == 0)) return 1;
  check_fail_(file, line, what);
  if (a && b && check_failures <= CHECK_PRINT_LIMIT) {
    const uint8_t *x = a, *y = b;
    size_t i = 0;
    while (x[i] == y[i]) i++;
    fprintf(stderr, "    first difference at byte %zu of %zu: 0x%02x vs 0x%02x\n", i, n, x[i], y[i]);
  }
  return 0;
}

/* Prints the tally; the value to return from main. */
static inline int check_summary(const char *name) {
  if (check_count == 0) {
    fprintf(stderr, "%s: no checks ran\n", name);
    return 1;
  }
  fprintf(check_failures ? stderr : stdout, "%s: %lu checks, %lu failed\n", name, check_count, check_failures);
  return check_failures ? 1 : 0;
}

#endif
