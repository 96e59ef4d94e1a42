// GrowOnlyArray: an array of owned objects that grows one element at a time, never shrinks or
// moves, and whose readers take no lock. The runtime's registry of workers: a thief or the
// monitor walks it while a new worker is added, and its capacity must not cost memory in
// proportion to a limit that is rarely reached (max_threads may be UINT_MAX).
//
// Segments of doubling size: segment k holds kFirst << k elements, allocated when the first of
// them is added, so growing never moves an element and never copies the segment table.
// Publication: the one writer (callers serialize additions, the runtime under its idle lock)
// stores the new element and, for a new segment, the segment's pointer, then the size with
// release; a reader loads the size with acquire and only then reads elements below it.
module;
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <memory>
export module karx.machinery:grow_only_array;

export namespace karx::detail {

template <class T>
class GrowOnlyArray {
 public:
  GrowOnlyArray() = default;
  GrowOnlyArray(const GrowOnlyArray&) = delete;
  GrowOnlyArray& operator=(const GrowOnlyArray&) = delete;
  ~GrowOnlyArray() {
    for (std::size_t k = 0; k < kSegments; ++k) delete[] segments_[k];
  }

  // Any thread: how many elements are published; each of [0, size()) may be read.
  unsigned size() const noexcept { return size_.load(std::memory_order_acquire); }
  T* operator[](unsigned i) const noexcept {
    const auto [k, offset] = locate(i);
    return segments_[k][offset].get();
  }

  // The one writer: appends `item` (returns it), or throws std::bad_alloc with nothing added.
  T* push_back(std::unique_ptr<T> item) {
    const unsigned n = size_.load(std::memory_order_relaxed);
    const auto [k, offset] = locate(n);
    if (segments_[k] == nullptr) segments_[k] = new std::unique_ptr<T>[kFirst << k];
    T* raw = item.get();
    segments_[k][offset] = std::move(item);
    size_.store(n + 1, std::memory_order_release);  // readers see the element (and its segment)
    return raw;
  }

 private:
  static constexpr std::size_t kFirst = 16;
  static constexpr std::size_t kSegments = 29;  // kFirst x (2^29 - 1) > 2^32 elements

  // Element i is in segment k = floor(log2(i / kFirst + 1)), at i - kFirst x (2^k - 1).
  struct Place {
    std::size_t segment;
    std::size_t offset;
  };
  static Place locate(unsigned i) noexcept {
    const std::size_t block = std::size_t{i} / kFirst + 1;
    const std::size_t k = static_cast<std::size_t>(std::bit_width(block)) - 1;
    return {k, std::size_t{i} - kFirst * ((std::size_t{1} << k) - 1)};
  }

  std::array<std::unique_ptr<T>*, kSegments> segments_{};
  std::atomic<unsigned> size_{0};
};

}  // namespace karx::detail
