//! gRPC-Web on the same TLS port (what a browser console speaks).

use traceflow_proto::v1 as pb;

use super::common::*;

type WebBody = tonic_web::GrpcWebCall<tonic::body::Body>;
type ToBody = fn(http::Request<WebBody>) -> http::Request<tonic::body::Body>;
type WebClient =
    tonic_web::GrpcWebClientService<tower::util::MapRequest<tonic::transport::Channel, ToBody>>;

/// A gRPC-Web client stack over a TLS channel.
fn web_stack(ch: tonic::transport::Channel) -> WebClient {
    let to_body: ToBody = |r| r.map(tonic::body::Body::new);
    tonic_web::GrpcWebClientService::new(tower::util::MapRequest::new(ch, to_body))
}

#[tokio::test]
async fn grpc_web_is_served_on_the_same_port() -> TestResult {
    let m = Manager::start().await?;
    m.register("alpha").await?;
    // Health over gRPC-Web, no credentials needed.
    let svc = web_stack(m.channel(None).await?);
    let mut health = tonic_health::pb::health_client::HealthClient::new(svc);
    let r = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // An authenticated call over gRPC-Web with the admin certificate.
    let svc = web_stack(m.admin().await?);
    let mut c = pb::cluster_service_client::ClusterServiceClient::new(svc);
    let list = c
        .list_clusters(pb::ListClustersRequest::default())
        .await?
        .into_inner();
    assert_eq!(list.clusters.len(), 1);
    // And refused without credentials, with the usual status.
    let svc = web_stack(m.channel(None).await?);
    let mut c = pb::cluster_service_client::ClusterServiceClient::new(svc);
    let s = c
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .err()
        .ok_or("anonymous gRPC-Web call accepted")?;
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    Ok(())
}

/// gRPC-Web over HTTP/1.1 (ALPN `http/1.1`, as a browser fetch may negotiate), by hand.
#[tokio::test]
async fn grpc_web_over_http1() -> TestResult {
    let m = Manager::start().await?;
    let body = [0u8, 0, 0, 0, 0]; // one empty HealthCheckRequest frame
    let head = format!(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let text = m.http1(&[head.as_bytes(), &body].concat()).await?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("application/grpc-web"), "{text}");
    assert!(text.contains("grpc-status:0"), "{text}");
    Ok(())
}
