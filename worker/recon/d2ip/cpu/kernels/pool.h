// A small persistent thread pool for the fused kernels: `parallel_for(n, f)` runs f(0) ... f(n-1)
// on the pool's threads and the caller, items dealt out one at a time.
//
// The kernels give every item (a plane of the grid) its own partial sums and add them in item
// order afterwards, so results do not depend on how many threads ran or which item ran where:
// bitwise the same for any thread count. A call made while the pool is busy (another Python
// thread inside a kernel) runs its items on the calling thread.
//
// Waiting (docs/d2ip.md, "Speed under load"). A job is done when all its items are done, not
// when every worker has checked in: a worker that is asleep or descheduled when the job comes
// finds the item counter exhausted (or a newer job's generation) and takes nothing, so the
// caller never waits for a thread that has no work. Workers and the caller spin for `spin`
// microseconds (`eitmon_set_spin`) before they sleep on a condition variable: on an idle
// machine the next kernel call usually follows within a few hundred microseconds and spinning
// pays; on a busy one (spin 0) every wait is a sleep and the core goes to whoever needs it.

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
        const uint32_t now = generation(ticket_.load());  // a worker's first job is the next one
        awake_.store(threads > 1 ? threads - 1 : 0);  // each starts awake
        for (int t = 1; t < threads; ++t)
            workers_.push_back(new std::thread([this, now] { loop(now); }));
    }

    int threads() const { return (int)workers_.size() + 1; }
    // Workers not asleep on the condition variable (spinning, working, or runnable but
    // descheduled): what /proc/loadavg counts of this pool besides the caller.
    int awake() const { return awake_.load(std::memory_order_relaxed); }
    pid_t owner() const { return owner_; }
    void set_spin(int microseconds) { spin_us_.store(microseconds < 0 ? 0 : microseconds); }
    int spin() const { return spin_us_.load(); }

    void run(int n, const std::function<void(int)>& f) {
        std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
        if (!busy || n <= 1 || workers_.empty()) {
            for (int i = 0; i < n; ++i) f(i);
            return;
        }
        job_ = &f;
        n_.store(n, std::memory_order_relaxed);
        done_.store(0, std::memory_order_relaxed);
        uint32_t gen;
        {
            std::lock_guard<std::mutex> lock(mutex_);  // sleeping workers check under it
            gen = generation(ticket_.load(std::memory_order_relaxed)) + 1;
            ticket_.store(uint64_t(gen) << 32, std::memory_order_release);  // item 0 of `gen`
        }
        wake_.notify_all();
        drain(gen);
        // seq_cst on done_ and caller_waits_: the caller's store-then-load and the last
        // worker's add-then-load cannot both miss each other (no lost wake-up)
        const auto finished = [&] { return done_.load() == n; };
        if (!spin_until(finished)) {
            std::unique_lock<std::mutex> lock(done_mutex_);
            caller_waits_.store(true);
            finished_.wait(lock, finished);
            caller_waits_.store(false);
        }
        job_ = nullptr;
    }

private:
    static uint32_t generation(uint64_t ticket) { return uint32_t(ticket >> 32); }

    // Spin for up to `spin_us_` while `ready()` is false; true once it holds.
    template <class Ready>
    bool spin_until(Ready ready) const {
        const int us = spin_us_.load(std::memory_order_relaxed);
        if (ready()) return true;
        if (us == 0) return false;
        const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
        for (int i = 0;; ++i) {
            if (ready()) return true;
            if ((i & 63) == 0 && std::chrono::steady_clock::now() > end) return false;
            cpu_relax();
        }
    }

    // Take the next item of job `gen`, if any is left (false once the job moved on).
    bool claim(uint32_t gen, int& item) {
        uint64_t t = ticket_.load(std::memory_order_acquire);
        for (;;) {
            if (generation(t) != gen || int(uint32_t(t)) >= n_.load(std::memory_order_relaxed))
                return false;
            if (ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) {
                item = int(uint32_t(t));
                return true;
            }
        }
    }

    // Run items of job `gen` until none is left; whoever finishes the last one wakes the caller.
    void drain(uint32_t gen) {
        for (int i; claim(gen, i);) {
            (*job_)(i);  // valid: the job is not done while item i is not
            const int n = n_.load(std::memory_order_relaxed);
            if (done_.fetch_add(1) + 1 == n && caller_waits_.load()) {
                std::lock_guard<std::mutex> lock(done_mutex_);
                finished_.notify_one();
            }
        }
    }

    void loop(uint32_t seen) {
        const auto moved = [&] {
            return generation(ticket_.load(std::memory_order_acquire)) != seen || stop_.load();
        };
        for (;;) {
            if (!spin_until(moved)) {
                std::unique_lock<std::mutex> lock(mutex_);
                awake_.fetch_sub(1);
                wake_.wait(lock, moved);
                awake_.fetch_add(1);
            }
            if (stop_.load()) return;
            seen = generation(ticket_.load(std::memory_order_acquire));
            drain(seen);
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
        awake_.store(0);
    }

    std::vector<std::thread*> workers_;
    const pid_t owner_ = getpid();
    std::mutex run_mutex_, mutex_, done_mutex_;
    std::condition_variable wake_, finished_;
    const std::function<void(int)>* job_ = nullptr;
    std::atomic<int> spin_us_{1000};  // until set: what the pool always did
    std::atomic<bool> stop_{false};
    std::atomic<bool> caller_waits_{false};
    std::atomic<int> awake_{0};
    // What waiting threads poll, and what every thread updates during a job, each on its own
    // cache line: nothing else (the heap around the pool) may share them.
    alignas(64) std::atomic<uint64_t> ticket_{0};  // generation << 32 | next item
    alignas(64) std::atomic<int> n_{0};
    alignas(64) std::atomic<int> done_{0};
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
