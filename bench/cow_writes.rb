# What a forked child copies of its parent's heap when it merely uses
# inherited objects, on this Ruby (README, "The preloader's heap"). For each
# case the parent prepares 100,000-200,000 objects as the rustrack
# preloader would (--preload-gc compact or age), forks, and the child does
# one thing to each object; the child's Private_Dirty growth is what it
# copied. Standard library only:
#
#   ruby bench/cow_writes.rb
def private_dirty_kb
  File.read("/proc/self/smaps_rollup")[/Private_Dirty:\s+(\d+)/, 1].to_i
end

# Runs `work` in a forked child with GC off (so only the work writes) and
# returns how many KB of the parent's pages the child copied.
def copied_kb(work)
  r, w = IO.pipe
  pid = fork do
    r.close
    GC.disable
    before = private_dirty_kb
    work.call
    w.puts(private_dirty_kb - before)
    exit!(0)
  end
  w.close
  Process.wait(pid)
  r.read.to_i
end

def report(name, kb)
  puts format("%-62s %7d KB", name, kb)
end

puts "Ruby #{RUBY_VERSION}"

# Young objects at the fork: the child's first minor GC writes their age.
GC.disable
$young = Array.new(200_000) { |i| "young #{i}" }
GC.enable
GC.start
GC.compact # --preload-gc compact: one full GC and a compaction
report("minor GC, 200k objects still young at the fork (compact)", copied_kb(-> { GC.start(full_mark: false) }))
GC.start # three full GCs in all: they are old now, as --preload-gc age makes them
report("minor GC, the same objects aged first (age)", copied_kb(-> { GC.start(full_mark: false) }))
$young = nil

# Objects that are old and compacted: what using them writes.
$hashes = Array.new(100_000) { |i| { a: i } }
$strings = Array.new(100_000) { |i| "s#{i}" }
4.times { GC.start }
GC.compact
$strings.each(&:ascii_only?) # code ranges known, as Process.warmup leaves them
{
  "read a value from each of 100k inherited hashes" => -> { $hashes.each { |h| h[:a] } },
  "iterate each of 100k inherited hashes (Hash#each)" => -> { $hashes.each { |h| h.each {} } },
  "append each of 100k inherited strings (String#<<)" => -> { out = +""; $strings.each { |s| out << s } },
  "interpolate each of 100k inherited strings" => -> { $strings.each { |s| "#{s}!" } },
  "compare each of 100k inherited strings (==)" => -> { $strings.each { |s| s == "x" } },
}.each { |name, work| report(name, copied_kb(work)) }
