# frozen_string_literal: true

# The Ruby half of rustrack: loaded by the preloader and by every worker
# before the app. The Rust side builds each request's env and owns the
# socket; this file holds what is simpler and clearer in Ruby: the events
# API apps use, loading config.ru, and the per-request call/each/close
# sequence, which writes through the Rust functions in Rustrack::Native.

require "stringio"

module Rustrack
  VERSION = "0.1.0"
  EVENTS = %i[starting_worker_process stopping_worker_process].freeze

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
    # [app, options]; Rack 3 returns the app.
    def load_app(rackup)
      require "rack"
      app = Rack::Builder.parse_file(rackup)
      app = app.first if app.is_a?(Array)
      raise TypeError, "#{rackup} did not produce a Rack app (got #{app.inspect})" unless app.respond_to?(:call)

      app
    end

    def describe_exception(e)
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

    def preloader?
      @role == :preloader
    end

    attr_accessor :role # :preloader or :worker, set by the Rust side
  end

  # The call sequence of one request. The Rust worker loop builds `env`
  # and calls `handle`; everything reaches the socket through Native.
  module RequestHandler
    def self.handle(app, env)
      body = nil
      status, headers, body = app.call(env)
      # Arrays (and bodies that say they are finite via to_ary) are written
      # in one go; anything else may be a stream, so each chunk is flushed
      # as it is produced.
      streaming = !(body.is_a?(Array) || body.respond_to?(:to_ary))
      Native.write_head(status, headers, streaming)
      body.each { |chunk| Native.write_body(chunk) }
      Native.finish
    rescue Exception => e # rubocop:disable Lint/RescueException
      $stderr.puts "[rustrack] error in #{env["REQUEST_METHOD"]} #{env["REQUEST_URI"]}: #{Rustrack.describe_exception(e)}"
      Native.fail
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
