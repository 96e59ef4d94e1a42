// KARX_TEST_SANITIZED: 1 in an ASan or TSan build. Such a build owns malloc (no interposing it)
// and runs threads of its own (process-wide CPU and thread counts include them).
#pragma once

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KARX_TEST_SANITIZED 1
#endif
#endif
#ifndef KARX_TEST_SANITIZED
#define KARX_TEST_SANITIZED 0
#endif
