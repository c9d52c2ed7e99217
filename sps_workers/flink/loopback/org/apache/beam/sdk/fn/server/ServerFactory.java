// Compile-time outline of Beam's ServerFactory (as vendored in flink-python 2.2) with a
// replacement of one nested class, InetSocketAddressServerFactory. Only that nested class is
// shipped (sps_workers/flink/loopback.py packs it into a jar placed before flink-python on the
// class path); the outer class and the other nested types stay flink-python's own.
//
// Why: PyFlink's process mode talks to each Python worker over Beam gRPC servers (control, data,
// state, logging, provisioning) built by this factory. The original announces a loopback address
// but binds with NettyServerBuilder.forPort, i.e. on every interface. This one binds the loopback
// address it announces. Signatures (private constructors included) match the original, so the
// outer class's static factories construct it unchanged.
package org.apache.beam.sdk.fn.server;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import org.apache.beam.model.pipeline.v1.Endpoints;
import org.apache.beam.sdk.fn.channel.SocketAddressFactory;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.BindableService;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.Server;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.ServerInterceptors;
import org.apache.beam.vendor.grpc.v1p60p1.io.grpc.netty.NettyServerBuilder;

public abstract class ServerFactory {

  public abstract Server allocateAddressAndCreate(
      List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor) throws IOException;

  public abstract Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
      throws IOException;

  /** Outline only: the shipped jar does not contain this interface. */
  public interface UrlFactory {
    String createUrl(String host, int port);
  }

  /** gRPC servers on the loopback interface, port from the supplier (0 = any free port). */
  public static class InetSocketAddressServerFactory extends ServerFactory {
    private static final int KEEP_ALIVE_PERMIT_SECONDS = 19;
    private final UrlFactory urlFactory;
    private final Supplier<Integer> portSupplier;

    private InetSocketAddressServerFactory(UrlFactory urlFactory) {
      this(urlFactory, () -> 0);
    }

    private InetSocketAddressServerFactory(UrlFactory urlFactory, Supplier<Integer> portSupplier) {
      this.urlFactory = urlFactory;
      this.portSupplier = portSupplier;
    }

    @Override
    public Server allocateAddressAndCreate(
        List<BindableService> services, Endpoints.ApiServiceDescriptor.Builder descriptor) throws IOException {
      InetSocketAddress wanted = new InetSocketAddress(InetAddress.getLoopbackAddress(), portSupplier.get());
      Server server = bind(services, wanted);
      descriptor.setUrl(urlFactory.createUrl(wanted.getHostName(), server.getPort()));
      return server;
    }

    @Override
    public Server create(List<BindableService> services, Endpoints.ApiServiceDescriptor descriptor)
        throws IOException {
      SocketAddress address = SocketAddressFactory.createFrom(descriptor.getUrl());
      if (!(address instanceof InetSocketAddress)) {
        throw new IllegalArgumentException(
            getClass().getSimpleName() + " needs a host:port address, got " + descriptor.getUrl());
      }
      return bind(services, (InetSocketAddress) address);
    }

    private static Server bind(List<BindableService> services, InetSocketAddress address) throws IOException {
      NettyServerBuilder builder = NettyServerBuilder.forAddress(address)
          .maxInboundMessageSize(Integer.MAX_VALUE)
          .permitKeepAliveTime(KEEP_ALIVE_PERMIT_SECONDS, TimeUnit.SECONDS);
      for (BindableService service : services) {
        builder.addService(ServerInterceptors.intercept(service, GrpcContextHeaderAccessorProvider.interceptor()));
      }
      return builder.build().start();
    }
  }
}
