# frozen_string_literal: true

# The Ruby half of rustrack: loaded by the preloader and by every worker
# before the app. The Rust side builds each request's env and owns the
# socket; this file holds what is simpler and clearer in Ruby: the events
# API apps use, loading config.ru, and the per-request call/each/close
# sequence, which writes through a Rustrack::ResponseWriter (Rust): one per
# session, that is per request thread.

# Nothing is required at the top level: the app's bundle is activated
# (Bundler.setup) after this file loads, and a gem loaded before that, even a
# default gem like stringio, could clash with the version the bundle locks.

module Rustrack
  VERSION = "0.1.0"
  EVENTS = %i[starting_worker_process stopping_worker_process].freeze
  # Passenger's events that rustrack has no equivalent for: apps may
  # register them (--passenger-compat), and the handlers never run.
  PASSENGER_ONLY_EVENTS = %i[starting_request_handler_thread credentials after_installing_signal_handlers oob_work].freeze

  # Raised when the app's Gemfile cannot be activated; the message says
  # what to run, so it is shown without Bundler's backtrace.
  class BundleError < StandardError; end

  # Raised into a request thread whose request ran longer than
  # --worker-timeout, in a worker with several threads (the client has had
  # its 504): its ensure blocks run, and the worker's other requests can
  # finish before it is replaced. Not a StandardError, so that a bare
  # `rescue` in the app does not swallow it (as Rack::Timeout's).
  class RequestTimeout < Exception; end # rubocop:disable Lint/InheritException

  @event_handlers = Hash.new { |h, k| h[k] = [] }

  class << self
    # Registers a block for a lifecycle event:
    #   Rustrack.on_event(:starting_worker_process) { |forked| reconnect if forked }
    #   Rustrack.on_event(:stopping_worker_process) { flush_metrics }
    def on_event(name, &block)
      name = name.to_sym
      raise ArgumentError, "unknown rustrack event #{name.inspect} (known: #{EVENTS.join(", ")})" unless EVENTS.include?(name)
      raise ArgumentError, "Rustrack.on_event needs a block" unless block

      @event_handlers[name] << block
      nil
    end

    # Runs the handlers of an event, in registration order. One handler's
    # exception is reported and does not stop the others.
    def call_event(name, *args)
      @event_handlers[name].each do |handler|
        handler.call(*args)
      rescue Exception => e # rubocop:disable Lint/RescueException
        $stderr.puts "[rustrack] #{name} handler raised: #{describe_exception(e)}"
      end
      nil
    end

    # Loads a rackup file and returns the app. Rack 2.2's parse_file returns
    # [app, options]; Rack 3 returns the app. The bundle is activated first,
    # so that rack itself and everything config.ru requires come from it.
    def load_app(rackup, app_root = File.dirname(rackup), passenger_compat = false)
      activate_bundle(app_root)
      define_passenger_compat if passenger_compat
      require "stringio"
      begin
        require "rack"
      rescue LoadError => e
        raise unless @gemfile

        raise BundleError, "rack is not in the app's bundle (#{@gemfile}): add gem \"rack\" to the Gemfile " \
                           "(#{e.message})"
      end
      app = Rack::Builder.parse_file(rackup)
      app = app.first if app.is_a?(Array)
      raise TypeError, "#{rackup} did not produce a Rack app (got #{app.inspect})" unless app.respond_to?(:call)

      app
    end

    # The Gemfile whose bundle is active, or nil under plain RubyGems.
    attr_reader :gemfile

    # Activates the app's Gemfile like `bundle exec` would: BUNDLE_GEMFILE
    # when set (relative to the app root), else APP_ROOT/Gemfile when it
    # exists; without either, plain RubyGems. Bundler.setup is called
    # directly rather than through bundler/setup, which on a terminal prints
    # the error and calls exit instead of raising.
    def activate_bundle(app_root)
      explicit = ENV["BUNDLE_GEMFILE"]
      explicit = nil if explicit && explicit.empty?
      gemfile = File.expand_path(explicit || "Gemfile", app_root)
      unless File.file?(gemfile)
        raise BundleError, "BUNDLE_GEMFILE is #{explicit}, which does not exist" if explicit

        return nil
      end
      ENV["BUNDLE_GEMFILE"] = gemfile
      begin
        require "bundler"
      rescue LoadError
        raise BundleError, "#{gemfile} exists but Bundler is not installed (Debian: apt-get install bundler)"
      end
      begin
        Bundler.setup
      rescue Bundler::BundlerError => e
        hint = e.is_a?(Bundler::GemNotFound) ? "; run `bundle install` in #{File.dirname(gemfile)}" : ""
        raise BundleError, "could not activate the bundle in #{gemfile}: #{e.message.strip} (#{e.class})#{hint}"
      end
      @gemfile = gemfile
    end

    # A minimal PhusionPassenger (--passenger-compat): just enough for apps
    # that follow Passenger's docs, `if defined?(PhusionPassenger)` then
    # `PhusionPassenger.on_event(:starting_worker_process) { |forked| ... }`,
    # to reconnect unchanged. Nothing else of Passenger's API exists.
    def define_passenger_compat
      return if defined?(::PhusionPassenger)

      passenger = Module.new do
        def self.on_event(name, &block)
          if Rustrack::PASSENGER_ONLY_EVENTS.include?(name.to_sym)
            $stderr.puts "[rustrack] PhusionPassenger.on_event(#{name.inspect}) has no rustrack equivalent; the handler will not run"
            return nil
          end
          Rustrack.on_event(name, &block)
        end

        def self.call_event(name, *args)
          Rustrack.call_event(name.to_sym, *args)
        end
      end
      Object.const_set(:PhusionPassenger, passenger)
    end

    # After a log rotation (SIGUSR1, forwarded by the front end): reopen
    # every file the app opened for appending whose path now names another
    # file or none, such as Rails' log/production.log renamed by logrotate.
    # Unicorn's rule, so apps moving from it keep their setup.
    def reopen_logs
      require "fcntl"
      append = File::WRONLY | File::APPEND
      ObjectSpace.each_object(File) do |file|
        next if file.closed? || file.path.nil?
        next unless (file.fcntl(Fcntl::F_GETFL) & append) == append

        before = file.stat
        now = File.stat(file.path) rescue nil
        next if now && now.dev == before.dev && now.ino == before.ino

        sync = file.sync
        file.reopen(file.path, "a")
        file.sync = sync
      rescue IOError, SystemCallError => e
        warn "[rustrack] pid #{Process.pid}: could not reopen #{file.path}: #{e.message}"
      end
      nil
    end

    # The preloader, before each fork: close ActiveRecord's connections so
    # that no worker inherits the preloader's database sockets (a forked
    # worker closing or using one would break it for every process). Each
    # worker opens its own on first use.
    def before_fork
      disconnect_active_record
    end

    # A forked worker, before its starting_worker_process handlers: what
    # Passenger does for every app. Process.fork already reseeded rand;
    # reseeding again costs nothing and does not depend on how we forked.
    # ActiveRecord should hold nothing after before_fork; should a pool
    # still be connected, it is discarded without closing the sockets (they
    # belong to the preloader) so the worker connects afresh.
    def after_fork
      srand
      return unless defined?(::ActiveRecord::Base)

      active_record_handlers.each do |handler|
        active_record_pools(handler).each do |pool|
          next unless pool.connected?

          pool.respond_to?(:discard!) ? pool.discard! : ::ActiveRecord::Base.establish_connection
        end
      end
    end

    # Threads libraries start at load time that are known to do no harm by
    # being missing in a forked worker, and why. Not warned about.
    KNOWN_HARMLESS_THREADS = {
      # Every Rails 6.1 app on Debian 12 has it. In a worker it is missing,
      # so thread-local slots of dead threads are not recycled there: a
      # little memory per thread the app starts, nothing else.
      "Concurrent::RubyThreadLocalVar::THREAD" => "concurrent-ruby 1.1's thread-local cleanup thread"
    }.freeze

    def known_harmless_thread?(thread)
      KNOWN_HARMLESS_THREADS.each_key.any? do |name|
        Object.const_get(name).equal?(thread)
      rescue NameError
        false
      end
    end

    # Ruby threads other than the main one that are alive in the preloader,
    # described by name or by where they were started. They do not survive
    # fork. Threads that declare themselves fork-safe (ActiveRecord's pool
    # reaper sets the :fork_safe thread variable, as Puma honours) and the
    # known harmless ones are left out.
    def threads_at_fork
      Thread.list.reject do |t|
        t == Thread.main || !t.alive? || t.thread_variable_get(:fork_safe) || known_harmless_thread?(t) ||
          request_threads.include?(t)
      end.map do |t|
        # Thread#inspect: #<Thread:0x…[@name] FILE:LINE STATUS>
        started = t.inspect[/ (\S+:\d+) \S+>\z/, 1]
        label = t.name ? "thread #{t.name.inspect}" : "a thread"
        started ? "#{label} started at #{started}" : label
      end
    end

    def describe_exception(e)
      return "#{e.class}: #{e.message}" if e.is_a?(BundleError)

      lines = ["#{e.class}: #{e.message}"]
      lines.concat((e.backtrace || []).map { |l| "    #{l}" })
      cause = e.cause
      while cause
        lines << "Caused by #{cause.class}: #{cause.message}"
        lines.concat((cause.backtrace || []).first(10).map { |l| "    #{l}" })
        cause = cause.cause
      end
      lines.join("\n")
    end

    def active_record_handlers
      base = ::ActiveRecord::Base
      handlers = begin
        # Rails 6.1's legacy handling keeps one handler per role. With the
        # new handling (config.load_defaults 6.1) one handler holds every
        # role and `connection_handlers` raises NotImplementedError, which
        # is a ScriptError, not a StandardError.
        legacy = !base.respond_to?(:legacy_connection_handling) || base.legacy_connection_handling
        legacy && base.respond_to?(:connection_handlers) ? base.connection_handlers.values : []
      rescue StandardError, NotImplementedError
        []
      end
      (handlers + [base.connection_handler]).uniq
    end

    # Every pool of a handler, whatever its role. Rails 6.1 and 7.0 list only
    # the current role's pools in `connection_pool_list` (and take `:all` for
    # a role named "all", which has none); 7.1 takes `:all` for every role.
    def active_record_pools(handler)
      if ::ActiveRecord.respond_to?(:version) && ::ActiveRecord.version >= Gem::Version.new("7.1")
        handler.connection_pool_list(:all)
      elsif handler.respond_to?(:all_connection_pools)
        handler.all_connection_pools
      else
        handler.connection_pool_list
      end
    end

    def disconnect_active_record
      return unless defined?(::ActiveRecord::Base) && ::ActiveRecord::Base.respond_to?(:connection_handler)

      active_record_handlers.each do |handler|
        # What clear_all_connections! does, for every role.
        active_record_pools(handler).each(&:disconnect!)
      end
    rescue StandardError, NotImplementedError => e
      $stderr.puts "[rustrack] could not disconnect ActiveRecord before forking: #{describe_exception(e)}"
    end

    def preloader?
      @role == :preloader
    end

    # rack.errors: $stderr as the worker starts (the Rust side cannot read
    # a global variable from a request thread).
    def stderr
      $stderr
    end

    attr_accessor :role # :preloader or :worker, set by the Rust side

    # The worker's own request threads (--threads-per-worker > 1), set by
    # the Rust side; they are stopped and joined before a worker forks.
    attr_writer :request_threads

    def request_threads
      @request_threads || []
    end

    # With several request threads, each may hold an ActiveRecord connection
    # at once: a pool smaller than that makes requests wait for one (and
    # fail with ActiveRecord::ConnectionTimeoutError after checkout_timeout).
    # Returns the warnings, one per pool too small; prints them.
    def check_thread_resources(threads)
      return [] unless threads > 1 && defined?(::ActiveRecord::Base) &&
                       ::ActiveRecord::Base.respond_to?(:connection_handler)

      warnings = active_record_handlers.flat_map { |handler| active_record_pools(handler) }.filter_map do |pool|
        next unless pool.respond_to?(:size) && pool.size < threads

        name = pool.respond_to?(:db_config) && pool.db_config ? pool.db_config.name : "primary"
        "ActiveRecord's connection pool (#{name}) holds #{pool.size} connections, fewer than " \
          "--threads-per-worker #{threads}: requests will wait for a connection; set pool: #{threads} " \
          "(or more) in config/database.yml, or RAILS_MAX_THREADS=#{threads}"
      end
      warnings.each { |w| $stderr.puts "[rustrack] warning: #{w}" }
      warnings
    rescue StandardError, NotImplementedError => e
      $stderr.puts "[rustrack] could not check ActiveRecord's pool size: #{describe_exception(e)}"
      []
    end
  end

  # The stream a Rack 3 streaming body writes to: each write goes to the
  # client as it is made. Reading is not supported (the request body is in
  # rack.input), so read returns nil as at end of input. It belongs to one
  # request: kept by the app past that, it refuses to write.
  class Stream
    def initialize(out)
      @out = out
      @request = out.request
      @closed = false
    end

    def write(*chunks)
      raise IOError, "closed stream" if @closed || @out.request != @request

      chunks.sum do |chunk|
        chunk = chunk.to_s
        @out.write_body(chunk)
        chunk.bytesize
      end
    end

    def <<(chunk)
      write(chunk)
      self
    end

    def flush
      self
    end

    def read(*)
      nil
    end

    def close_read; end

    def close_write
      @closed = true
    end

    def close
      @closed = true
    end

    def closed?
      @closed
    end
  end

  # The call sequence of one request. The Rust side builds `env` and calls
  # `handle` with the session's ResponseWriter, `out`, through which
  # everything reaches the socket.
  module RequestHandler
    def self.handle(app, env, out)
      body = nil
      # The front end sends files named in X-Sendfile, and says so in this
      # header (replacing any a client sent). Rack >= 2.2.20 and 3.1.18 no
      # longer read it (CVE-2025-61780): sendfile.type is how a server tells
      # Rack::Sendfile.
      env["sendfile.type"] = "X-Sendfile" if env["HTTP_X_SENDFILE_TYPE"] == "X-Sendfile"
      status, headers, body = app.call(env)
      # Arrays (and bodies that say they are finite via to_ary) are written
      # in one go; anything else may be a stream, so each chunk is flushed
      # as it is produced.
      if body.respond_to?(:each)
        streaming = !(body.is_a?(Array) || body.respond_to?(:to_ary))
        out.write_head(status, headers, streaming)
        body.each { |chunk| out.write_body(chunk) }
      elsif body.respond_to?(:call)
        # A Rack 3 streaming body: it writes to a stream we hand it. The
        # response ends when call returns (or the body closes the stream).
        out.write_head(status, headers, true)
        body.call(Stream.new(out))
      else
        raise TypeError, "the Rack body responds to neither each nor call (#{body.class})"
      end
      out.finish
    rescue Exception => e # rubocop:disable Lint/RescueException
      $stderr.puts "[rustrack] error in #{env["REQUEST_METHOD"]} #{env["REQUEST_URI"]}: #{Rustrack.describe_exception(e)}"
      out.fail
      raise if e.is_a?(SystemExit)
    ensure
      if body.respond_to?(:close)
        begin
          body.close
        rescue Exception => e # rubocop:disable Lint/RescueException
          $stderr.puts "[rustrack] error closing the body of #{env["REQUEST_URI"]}: #{Rustrack.describe_exception(e)}"
        end
      end
    end
  end
end
