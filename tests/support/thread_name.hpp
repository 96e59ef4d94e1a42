// The calling thread's name (pthread_getname_np): karx names the threads it starts.
#pragma once

#include <pthread.h>

#include <string>

namespace probes {

inline std::string this_thread_name() {
  char name[32] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

}  // namespace probes
