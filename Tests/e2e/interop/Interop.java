// The interop replica and caller on grpc-java over Netty (the transport of the Kotlin SDK), built
// by stacks.py against Debian's libgrpc-java. Both follow the protocol of stacks.py:
//
//   java Interop replica --name NAME [--max-header-list-size N]   prints "listening on 127.0.0.1:PORT"
//   java Interop call --target HOST:PORT                          prints one JSON report
//
// The replica echoes HandleMessages' last message, answers `error:CODE:MESSAGE` with that status,
// sleeps first on `sleep:MS`, streams `stream:N` as N chunks, echoes the metadata x-interop-echo and
// x-interop-echo-bin in its headers and names itself in x-interop-replica and the trailer
// x-interop-trailer. It prints "call METHOD" for each call it runs.
import com.getbindu.grpc.AgentHandlerGrpc;
import com.getbindu.grpc.ChatMessage;
import com.getbindu.grpc.GetCapabilitiesRequest;
import com.getbindu.grpc.GetCapabilitiesResponse;
import com.getbindu.grpc.HandleRequest;
import com.getbindu.grpc.HandleResponse;
import com.getbindu.grpc.HealthCheckRequest;
import com.getbindu.grpc.HealthCheckResponse;
import io.grpc.ForwardingServerCall;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.net.InetSocketAddress;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

public final class Interop {
  static final Metadata.Key<String> ECHO = Metadata.Key.of("x-interop-echo", Metadata.ASCII_STRING_MARSHALLER);
  static final Metadata.Key<byte[]> ECHO_BIN = Metadata.Key.of("x-interop-echo-bin", Metadata.BINARY_BYTE_MARSHALLER);
  static final Metadata.Key<String> REPLICA = Metadata.Key.of("x-interop-replica", Metadata.ASCII_STRING_MARSHALLER);
  static final Metadata.Key<String> TRAILER = Metadata.Key.of("x-interop-trailer", Metadata.ASCII_STRING_MARSHALLER);

  public static void main(String[] args) throws Exception {
    if (args.length > 0 && args[0].equals("replica")) {
      replica(option(args, "--name", "java"), Integer.parseInt(option(args, "--max-header-list-size", "0")));
    } else if (args.length > 0 && args[0].equals("call")) {
      System.out.println(call(option(args, "--target", null)));
    } else {
      System.err.println("usage: Interop replica --name NAME [--max-header-list-size N] | call --target HOST:PORT");
      System.exit(2);
    }
  }

  static String option(String[] args, String name, String fallback) {
    for (int i = 1; i + 1 < args.length; i++) if (args[i].equals(name)) return args[i + 1];
    if (fallback == null) throw new IllegalArgumentException(name + " is required");
    return fallback;
  }

  // ---- the replica

  static void replica(String name, int maxHeaderListSize) throws Exception {
    NettyServerBuilder builder = NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0))
        .maxInboundMessageSize(8 << 20);
    if (maxHeaderListSize > 0) builder.maxInboundMetadataSize(maxHeaderListSize);
    Server server = builder.addService(ServerInterceptors.intercept(new Handler(name), new EchoMetadata(name)))
        .build().start();
    System.out.println("listening on 127.0.0.1:" + server.getPort());
    System.out.flush();
    server.awaitTermination();
  }

  static final class EchoMetadata implements ServerInterceptor {
    final String name;
    EchoMetadata(String name) { this.name = name; }

    @Override
    public <Q, A> ServerCall.Listener<Q> interceptCall(ServerCall<Q, A> call, Metadata headers, ServerCallHandler<Q, A> next) {
      String method = call.getMethodDescriptor().getBareMethodName();
      System.out.println("call " + method);
      System.out.flush();
      String echo = headers.get(ECHO);
      byte[] echoBin = headers.get(ECHO_BIN);
      return next.startCall(new ForwardingServerCall.SimpleForwardingServerCall<Q, A>(call) {
        @Override
        public void sendHeaders(Metadata answer) {
          answer.put(REPLICA, name);
          if (echo != null) answer.put(ECHO, echo);
          if (echoBin != null) answer.put(ECHO_BIN, echoBin);
          super.sendHeaders(answer);
        }

        @Override
        public void close(Status status, Metadata trailers) {
          trailers.put(TRAILER, name);
          super.close(status, trailers);
        }
      }, headers);
    }
  }

  static final class Handler extends AgentHandlerGrpc.AgentHandlerImplBase {
    final String name;
    Handler(String name) { this.name = name; }

    @Override
    public void handleMessages(HandleRequest request, StreamObserver<HandleResponse> answer) {
      String text = request.getMessagesCount() == 0 ? "" : request.getMessages(request.getMessagesCount() - 1).getContent();
      if (text.startsWith("error:")) {
        String[] parts = text.split(":", 3);
        answer.onError(Status.fromCodeValue(Integer.parseInt(parts[1])).withDescription(parts[2]).asRuntimeException());
        return;
      }
      if (text.startsWith("sleep:")) {
        try {
          Thread.sleep(Long.parseLong(text.substring("sleep:".length())));
        } catch (InterruptedException ignored) {
          Thread.currentThread().interrupt();
        }
      }
      answer.onNext(HandleResponse.newBuilder().setContent(text).build());
      answer.onCompleted();
    }

    @Override
    public void handleMessagesStream(HandleRequest request, StreamObserver<HandleResponse> answer) {
      String text = request.getMessages(request.getMessagesCount() - 1).getContent();
      int count = Integer.parseInt(text.substring("stream:".length()));
      for (int i = 0; i < count; i++) {
        answer.onNext(HandleResponse.newBuilder().setContent("chunk-" + i).setIsFinal(i == count - 1).build());
      }
      answer.onCompleted();
    }

    @Override
    public void getCapabilities(GetCapabilitiesRequest request, StreamObserver<GetCapabilitiesResponse> answer) {
      answer.onNext(GetCapabilitiesResponse.newBuilder().setName(name).setDescription("interop replica").build());
      answer.onCompleted();
    }

    @Override
    public void healthCheck(HealthCheckRequest request, StreamObserver<HealthCheckResponse> answer) {
      answer.onNext(HealthCheckResponse.newBuilder().setHealthy(true).setMessage("ok").build());
      answer.onCompleted();
    }
  }

  // ---- the caller

  static HandleRequest ask(String text) {
    return HandleRequest.newBuilder().addMessages(ChatMessage.newBuilder().setRole("user").setContent(text)).build();
  }

  static String payload(int size) {
    String pattern = "0123456789abcdefghijklmnopqrstuvwxyz";
    StringBuilder out = new StringBuilder(size);
    while (out.length() < size) out.append(pattern, 0, Math.min(pattern.length(), size - out.length()));
    return out.toString();
  }

  static String call(String target) throws Exception {
    String[] hostPort = target.split(":");
    ManagedChannel channel = NettyChannelBuilder.forAddress(hostPort[0], Integer.parseInt(hostPort[1]))
        .usePlaintext().maxInboundMessageSize(8 << 20).build();
    AgentHandlerGrpc.AgentHandlerBlockingStub stub = AgentHandlerGrpc.newBlockingStub(channel);
    Json report = new Json();

    List<String> unary = new ArrayList<>();
    for (int size : new int[] {10, 100_000, 3_900_000}) {
      Json one = new Json().put("size", size);
      try {
        String content = stub.withDeadlineAfter(30, TimeUnit.SECONDS).handleMessages(ask(payload(size))).getContent();
        one.put("status", 0).put("length", content.length()).put("sha256", sha256(content));
      } catch (StatusRuntimeException error) {
        one.put("status", error.getStatus().getCode().value()).put("message", error.getStatus().getDescription());
      }
      unary.add(one.toString());
    }
    report.putRaw("unary", "[" + String.join(",", unary) + "]");

    try {
      stub.withDeadlineAfter(10, TimeUnit.SECONDS).handleMessages(ask("error:9:" + ERROR_MESSAGE));
      report.putRaw("error", new Json().put("status", 0).toString());
    } catch (StatusRuntimeException error) {
      report.putRaw("error", new Json().put("status", error.getStatus().getCode().value())
          .put("message", error.getStatus().getDescription()).toString());
    }

    Metadata sent = new Metadata();
    sent.put(ECHO, "hello from java");
    sent.put(ECHO_BIN, new byte[] {0, 1, (byte) 0xfe, (byte) 0xff});
    AtomicReference<Metadata> headers = new AtomicReference<>();
    AtomicReference<Metadata> trailers = new AtomicReference<>();
    Json metadata = new Json();
    try {
      stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(sent),
              MetadataUtils.newCaptureMetadataInterceptor(headers, trailers))
          .withDeadlineAfter(10, TimeUnit.SECONDS).handleMessages(ask("metadata"));
      metadata.put("status", 0).put("sent", "hello from java").put("sent_bin", "0001feff")
          .put("header", headers.get().get(ECHO)).put("header_bin", hex(headers.get().get(ECHO_BIN)))
          .put("replica", headers.get().get(REPLICA)).put("trailer", trailers.get().get(TRAILER));
    } catch (StatusRuntimeException error) {
      metadata.put("status", error.getStatus().getCode().value()).put("message", error.getStatus().getDescription());
    }
    report.putRaw("metadata", metadata.toString());

    long started = System.nanoTime();
    Json deadline = new Json();
    try {
      stub.withDeadlineAfter(200, TimeUnit.MILLISECONDS).handleMessages(ask("sleep:1000"));
      deadline.put("status", 0);
    } catch (StatusRuntimeException error) {
      deadline.put("status", error.getStatus().getCode().value());
    }
    report.putRaw("deadline", deadline.put("elapsed_ms", (System.nanoTime() - started) / 1_000_000).toString());

    AgentHandlerGrpc.AgentHandlerFutureStub futures = AgentHandlerGrpc.newFutureStub(channel);
    ExecutorService pool = Executors.newFixedThreadPool(4);
    List<CompletableFuture<Boolean>> calls = new ArrayList<>();
    for (int i = 0; i < 50; i++) {
      String text = "call-" + i + "-" + payload(1000);
      var future = futures.withDeadlineAfter(30, TimeUnit.SECONDS).handleMessages(ask(text));
      CompletableFuture<Boolean> done = new CompletableFuture<>();
      future.addListener(() -> {
        try {
          done.complete(future.get().getContent().equals(text));
        } catch (Exception error) {
          done.complete(false);
        }
      }, pool);
      calls.add(done);
    }
    int intact = 0;
    for (CompletableFuture<Boolean> done : calls) if (done.get()) intact++;
    pool.shutdown();
    report.putRaw("concurrent", new Json().put("calls", 50).put("intact", intact).toString());

    List<String> chunks = new ArrayList<>();
    Json stream = new Json();
    try {
      Iterator<HandleResponse> answers = stub.withDeadlineAfter(10, TimeUnit.SECONDS).handleMessagesStream(ask("stream:20"));
      while (answers.hasNext()) chunks.add(Json.quote(answers.next().getContent()));
      stream.put("status", 0);
    } catch (StatusRuntimeException error) {
      stream.put("status", error.getStatus().getCode().value());
    }
    report.putRaw("stream", stream.putRaw("chunks", "[" + String.join(",", chunks) + "]").toString());

    channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    return report.toString();
  }

  /** The status message every caller sends for the replica to answer with (stacks.ERROR_MESSAGE). */
  static final String ERROR_MESSAGE = "interop: no such thing, \u00e9t\u00e9 100% gone";

  static String sha256(String text) throws Exception {
    return hex(MessageDigest.getInstance("SHA-256").digest(text.getBytes(java.nio.charset.StandardCharsets.UTF_8)));
  }

  static String hex(byte[] bytes) {
    if (bytes == null) return null;
    StringBuilder out = new StringBuilder();
    for (byte b : bytes) out.append(String.format("%02x", b));
    return out.toString();
  }

  /** A JSON object written by hand (the classpath has no JSON library). */
  static final class Json {
    final List<String> fields = new ArrayList<>();

    Json put(String key, Object value) {
      String encoded = value == null ? "null" : value instanceof Number ? value.toString() : quote(value.toString());
      return putRaw(key, encoded);
    }

    Json putRaw(String key, String encoded) {
      fields.add(quote(key) + ":" + encoded);
      return this;
    }

    static String quote(String text) {
      StringBuilder out = new StringBuilder("\"");
      for (char c : text.toCharArray()) {
        if (c == '"' || c == '\\') out.append('\\').append(c);
        else if (c < 0x20 || c > 0x7e) out.append(String.format("\\u%04x", (int) c));
        else out.append(c);
      }
      return out.append('"').toString();
    }

    @Override
    public String toString() { return "{" + String.join(",", fields) + "}"; }
  }
}
