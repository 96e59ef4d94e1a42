// GrowOnlyArray: elements keep their addresses and values across segment boundaries, and a
// reader walking it while the writer appends sees every published element fully built.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

import karx.machinery;

namespace {

struct Item {
  explicit Item(unsigned v) : value(v), check(~v) {}
  unsigned value;
  unsigned check;  // written with value: a reader seeing a half-built item sees a mismatch
};

TEST(GrowOnlyArray, ElementsKeepTheirPlaceAcrossSegments) {
  karx::detail::GrowOnlyArray<Item> array;
  EXPECT_EQ(array.size(), 0u);
  std::vector<Item*> addresses;
  constexpr unsigned kCount = 16 * 127 + 5;  // seven segments (16, 32, ..., 1024) and part of the eighth
  for (unsigned i = 0; i < kCount; ++i) {
    addresses.push_back(array.push_back(std::make_unique<Item>(i)));
    ASSERT_EQ(array.size(), i + 1);
  }
  for (unsigned i = 0; i < kCount; ++i) {
    ASSERT_EQ(array[i], addresses[i]) << i;
    ASSERT_EQ(array[i]->value, i);
  }
}

TEST(GrowOnlyArray, AReaderSeesEveryPublishedElementBuiltWhileTheWriterAppends) {
  karx::detail::GrowOnlyArray<Item> array;
  constexpr unsigned kCount = 20'000;
  std::atomic<bool> done{false};
  std::atomic<unsigned> bad{0};
  std::thread reader([&] {
    while (!done.load(std::memory_order_acquire)) {
      const unsigned n = array.size();
      for (unsigned i = 0; i < n; ++i) {
        const Item* item = array[i];
        if (item == nullptr || item->value != i || item->check != ~i) bad.fetch_add(1);
      }
    }
  });
  for (unsigned i = 0; i < kCount; ++i) array.push_back(std::make_unique<Item>(i));
  done.store(true, std::memory_order_release);
  reader.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_EQ(array.size(), kCount);
}

}  // namespace
