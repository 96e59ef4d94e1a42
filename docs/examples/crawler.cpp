// A crawler-style pipeline on karx.sync: a producer feeds URLs into a bounded channel; N
// workers take them, each fetch bounded by a semaphore (at most 3 at once) and by a timeout;
// pages go to a results channel; everything runs in a TaskGroup, so the first error cancels
// the whole crawl. "Fetching" is simulated with timers, so the example needs no network.
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>
import karx;

using namespace std::chrono_literals;

struct Page {
  std::string url;
  std::size_t bytes;
};

struct Crawl {
  std::size_t pages = 0;
  std::size_t bytes = 0;
  int timed_out = 0;
};

// Stands in for a network fetch: slow URLs take 1 s, broken ones fail.
karx::Async<Page> fetch(std::string url) {
  co_await karx::sleep_for(url.find("slow") != std::string::npos ? 1s : 2ms);
  if (url.find("broken") != std::string::npos) throw std::runtime_error("fetch failed: " + url);
  co_return Page{url, 1000 + url.size()};
}

karx::Async<> produce(karx::Sender<std::string> urls, std::vector<std::string> todo) {
  for (auto& url : todo)
    if (!co_await urls.send(std::move(url))) co_return;  // closed: the crawl was cancelled
}

karx::Async<> work(karx::Receiver<std::string> urls, karx::Semaphore& fetches, karx::Sender<Page> pages,
                   std::atomic<int>& timed_out) {
  while (std::optional<std::string> url = co_await urls.recv()) {
    karx::SemaphorePermit permit = co_await fetches.acquire();  // at most 3 fetches at once
    std::optional<Page> page = co_await karx::timeout(100ms, fetch(*url));
    if (!page) {
      ++timed_out;  // too slow: the fetch was cancelled, move on
      continue;
    }
    co_await pages.send(std::move(*page));
  }
}

karx::Async<Crawl> crawl(std::vector<std::string> todo) {
  karx::TaskGroup group;
  karx::Semaphore fetches(3);
  std::atomic<int> timed_out{0};
  auto [url_tx, url_rx] = karx::channel<std::string>(8);
  auto [page_tx, page_rx] = karx::unbounded_channel<Page>();
  std::vector<karx::JoinHandle<void>> children;
  children.push_back(group.spawn(produce(std::move(url_tx), std::move(todo))));
  for (int w = 0; w < 4; ++w) children.push_back(group.spawn(work(url_rx, fetches, page_tx, timed_out)));
  url_rx = {};  // the workers hold the channels' other ends now
  page_tx = {};

  Crawl result;
  while (std::optional<Page> page = co_await page_rx.recv()) {  // ends when every worker is gone
    ++result.pages;
    result.bytes += page->bytes;
  }
  std::exception_ptr error;
  try {
    co_await group.join();  // rethrows the first worker's exception, after cancelling the rest
  } catch (...) {
    error = std::current_exception();
  }
  for (auto& child : children) {  // each handle has its child's outcome too; take them all
    try {
      (void)co_await child;
    } catch (...) {
    }
  }
  if (error) std::rethrow_exception(error);
  result.timed_out = timed_out;
  co_return result;
}

std::vector<std::string> urls(int n, bool with_broken) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    if (i % 10 == 5)
      out.push_back("https://example.org/slow/" + std::to_string(i));
    else if (with_broken && i == 30)
      out.push_back("https://example.org/broken/" + std::to_string(i));
    else
      out.push_back("https://example.org/page/" + std::to_string(i));
  }
  return out;
}

int main() {
  karx::Runtime rt;
  Crawl ok = rt.block_on(crawl(urls(60, false)));
  std::printf("crawled %zu pages (%zu bytes), %d timed out\n", ok.pages, ok.bytes, ok.timed_out);
  try {
    rt.block_on(crawl(urls(1000, true)));
    std::printf("the broken crawl did not fail\n");
  } catch (const std::exception& e) {
    std::printf("crawl cancelled on the first error: %s\n", e.what());
  }
}
