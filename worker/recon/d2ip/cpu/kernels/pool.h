// A small persistent thread pool for the fused kernels: `parallel_for(n, f)` runs f(0) ... f(n-1)
// on the pool's threads and the caller, items dealt out one at a time.
//
// The kernels give every item (a plane of the grid) its own partial sums and add them in item
// order afterwards, so results do not depend on how many threads ran or which item ran where:
// bitwise the same for any thread count. Workers spin for a short while after a job (the next
// kernel call usually follows within a few hundred microseconds) and then sleep. A call made
// while the pool is busy (another Python thread inside a kernel) runs its items on the calling
// thread.

#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

namespace eitmon {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

class Pool {
public:
    // Total threads including the caller; 1 = no workers.
    void resize(int threads) {
        std::lock_guard<std::mutex> busy(run_mutex_);
        stop_workers();
        stop_ = false;
        const uint64_t now = generation_.load();  // a worker's first job is the next one
        for (int t = 1; t < threads; ++t)
            workers_.push_back(new std::thread([this, now] { loop(now); }));
    }

    int threads() const { return (int)workers_.size() + 1; }
    pid_t owner() const { return owner_; }

    void run(int n, const std::function<void(int)>& f) {
        std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
        if (!busy || n <= 1 || workers_.empty()) {
            for (int i = 0; i < n; ++i) f(i);
            return;
        }
        job_ = &f;
        n_ = n;
        next_.store(0, std::memory_order_relaxed);
        active_.store((int)workers_.size(), std::memory_order_relaxed);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            generation_.fetch_add(1, std::memory_order_release);
        }
        wake_.notify_all();
        drain();
        for (int spins = 0; active_.load(std::memory_order_acquire) != 0; ++spins) {
            if (spins < kPatience) cpu_relax();
            else std::this_thread::yield();  // a worker may be waiting for this core
        }
        job_ = nullptr;
    }

private:
    void drain() {
        for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) (*job_)(i);
    }

    void loop(uint64_t seen) {
        for (;;) {
            const auto start = std::chrono::steady_clock::now();
            while (generation_.load(std::memory_order_acquire) == seen && !stop_.load()) {
                if (std::chrono::steady_clock::now() - start > kSpin) {
                    std::unique_lock<std::mutex> lock(mutex_);
                    wake_.wait(lock, [&] {
                        return generation_.load(std::memory_order_acquire) != seen ||
                               stop_.load();
                    });
                    break;
                }
                cpu_relax();
            }
            if (stop_.load()) return;
            seen = generation_.load(std::memory_order_acquire);
            drain();
            active_.fetch_sub(1, std::memory_order_release);
        }
    }

    void stop_workers() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread* t : workers_) {
            t->join();
            delete t;
        }
        workers_.clear();
    }

    static constexpr std::chrono::microseconds kSpin{1000};  // workers' spin before sleeping
    static constexpr int kPatience = 1000;  // caller's pauses before yielding
    std::vector<std::thread*> workers_;
    const pid_t owner_ = getpid();
    std::mutex run_mutex_, mutex_;
    std::condition_variable wake_;
    // What spinning workers poll, and what every thread updates during a job, each on its own
    // cache line: nothing else (the heap around the pool) may share them.
    alignas(64) std::atomic<uint64_t> generation_{0};
    std::atomic<bool> stop_{false};
    const std::function<void(int)>* job_ = nullptr;
    int n_ = 0;
    alignas(64) std::atomic<int> next_{0};
    alignas(64) std::atomic<int> active_{0};
    char pad_[64 - sizeof(std::atomic<int>)];
};

// This process's pool, never destroyed (its sleeping workers end with the process). A forked
// child gets a new one: the parent's workers do not exist there, and its copies of the parent's
// mutexes and condition variable must not be touched (they may wait for those threads).
inline Pool& pool() {
    static std::atomic<Pool*> current{nullptr};
    Pool* p = current.load(std::memory_order_acquire);
    if (p != nullptr && p->owner() == getpid()) return *p;
    Pool* fresh = new Pool();
    if (current.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread installed one first
    return *p;
}

inline void parallel_for(int n, const std::function<void(int)>& f) { pool().run(n, f); }

}  // namespace eitmon
