//! Prometheus metrics against the real binary: what a scrape of `metrics.listen` shows
//! after real requests and reloads, that the API port never serves them, and that a reload
//! moves, refuses or closes the metrics listener.

mod support;

use std::net::SocketAddr;

use support::{FakeSystemd, SELF_BOUND_LISTEN, field, get_once};

fn config(metrics: Option<&str>) -> String {
    let metrics = metrics.map_or(String::new(), |addr| {
        format!("[metrics]\nlisten = \"{addr}\"\n")
    });
    format!("[server]\nlisten = [\"{SELF_BOUND_LISTEN}\"]\n{metrics}")
}

/// The value of the sample `name{labels}` (labels exactly as written), if scraped.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

async fn scrape(addr: SocketAddr) -> String {
    let reply = get_once(addr, "/metrics").await.expect("scrape");
    assert_eq!(reply.status, 200);
    let content_type = reply.headers["content-type"].to_str().unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    String::from_utf8(reply.body.to_vec()).expect("text")
}

async fn metrics_addr(sd: &FakeSystemd) -> Option<SocketAddr> {
    sd.status().await["metrics"]
        .as_str()
        .map(|a| a.parse().expect("an address"))
}

fn unused_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_reloads_and_live_state_are_scraped_on_their_own_listener() {
    let mut sd = FakeSystemd::new();
    sd.write_config(&config(Some("127.0.0.1:0")));
    sd.start().await;
    let api = sd.bound_addr(SELF_BOUND_LISTEN).await;
    let metrics = metrics_addr(&sd).await.expect("metrics are on");
    assert_ne!(metrics, api);

    for _ in 0..3 {
        assert_eq!(get_once(api, "/versions").await.expect("get").status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get_once(api, "/v2/images").await.expect("get").status, 200);
    }
    let image = support::create_image(api).await;
    let show = get_once(api, &format!("/v2/images/{image}"))
        .await
        .expect("get");
    assert_eq!(show.status, 200);
    assert_eq!(get_once(api, "/v2/nothing").await.expect("get").status, 404);
    assert_eq!(
        get_once(api, "/v2/images/x").await.expect("get").status,
        404
    );

    let text = scrape(metrics).await;
    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        count(r#"glint_http_requests_total{route="/versions",method="GET",status="2xx"}"#),
        3.0
    );
    assert_eq!(
        count(r#"glint_http_requests_total{route="/v2/images",method="GET",status="2xx"}"#),
        2.0
    );
    assert_eq!(
        count(r#"glint_http_requests_total{route="/v2/images",method="POST",status="2xx"}"#),
        1.0
    );
    assert_eq!(
        count(r#"glint_http_requests_total{route="/v2/images/{id}",method="GET",status="2xx"}"#),
        1.0
    );
    assert_eq!(
        count(r#"glint_http_requests_total{route="/v2/images/{id}",method="GET",status="4xx"}"#),
        1.0
    );
    assert_eq!(
        count(r#"glint_http_requests_total{route="unmatched",method="GET",status="4xx"}"#),
        1.0
    );
    assert_eq!(
        count(r#"glint_http_request_duration_seconds_count{route="/versions",method="GET"}"#),
        3.0
    );
    assert!(
        count(r#"glint_http_request_duration_seconds_sum{route="/versions",method="GET"}"#) > 0.0
    );
    assert_eq!(count("glint_generations_alive"), 1.0);
    assert_eq!(count("glint_generations_draining"), 0.0);
    assert!(count("glint_db_connections_max") >= 2.0, "{text}");
    assert!(count("glint_transfers_limit") >= 1.0);
    assert_eq!(count("glint_transfers_in_flight"), 0.0);
    assert!(
        count(r#"glint_store_free_bytes{store="default"}"#) > 0.0,
        "{text}"
    );
    // A keep-alive connection idle between requests is open and idle.
    let mut held = support::Conn::open(api).await.expect("connect");
    assert_eq!(held.get("/versions").await.expect("get").status, 200);
    let text = scrape(metrics).await;
    let gauge = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series}"));
    assert!(gauge("glint_connections_open") >= 1.0, "{text}");
    assert!(gauge("glint_connections_idle") >= 1.0, "{text}");
    drop(held);

    // The API port never answers with the metrics.
    let on_api = get_once(api, "/metrics").await.expect("get");
    assert!(!String::from_utf8_lossy(&on_api.body).contains("glint_http_requests_total"));
    assert_eq!(get_once(metrics, "/other").await.expect("get").status, 404);

    // A reload that moves the listener: the new address serves, the old one is closed.
    let moved = unused_port();
    sd.write_config(&config(Some(&moved.to_string())));
    let (_, ready) = sd.reload().await;
    assert!(field(&ready, "ERRNO").is_none(), "{ready:?}");
    assert_eq!(metrics_addr(&sd).await, Some(moved));
    let text = scrape(moved).await;
    assert_eq!(
        sample(&text, r#"glint_reloads_total{outcome="applied"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "glint_reload_duration_seconds_count"),
        Some(1.0)
    );
    // The counters outlive the generation that counted them.
    assert_eq!(
        sample(
            &text,
            r#"glint_http_requests_total{route="/versions",method="GET",status="2xx"}"#
        ),
        Some(4.0)
    );
    assert!(
        get_once(metrics, "/metrics").await.is_err(),
        "the old listener still serves"
    );

    // The API's own address is refused, naming the key; the running listener stays.
    sd.write_config(&config(Some(&api.to_string())));
    let (_, ready) = sd.reload().await;
    let status = field(&ready, "STATUS").expect("STATUS");
    assert!(status.contains("metrics.listen"), "{status}");
    let text = scrape(moved).await;
    assert_eq!(
        sample(&text, r#"glint_reloads_total{outcome="rejected"}"#),
        Some(1.0)
    );

    // Unset: the listener closes.
    sd.write_config(&config(None));
    let (_, ready) = sd.reload().await;
    assert!(field(&ready, "ERRNO").is_none(), "{ready:?}");
    assert_eq!(metrics_addr(&sd).await, None);
    assert!(
        get_once(moved, "/metrics").await.is_err(),
        "metrics still served"
    );
    assert_eq!(get_once(api, "/versions").await.expect("get").status, 200);
    assert_eq!(sd.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_bytes_and_cache_hits_are_counted() {
    let mut sd = FakeSystemd::new();
    sd.write_config(&format!(
        "{}[cache]\nenabled = true\n",
        config(Some("127.0.0.1:0"))
    ));
    sd.start().await;
    let api = sd.bound_addr(SELF_BOUND_LISTEN).await;
    let metrics = metrics_addr(&sd).await.expect("metrics are on");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let id = support::create_image(api).await;
    assert_eq!(support::upload_image(api, &id, &data).await.status, 204);

    let path = format!("/v2/images/{id}/file");
    let download = || async {
        let reply = get_once(api, &path).await.expect("get");
        assert_eq!((reply.status, &reply.body[..]), (200, &data[..]));
    };
    download().await;
    // The miss became an entry: the next download is a hit.
    let entries = sd.path("state").join("cache").join("data");
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while support::file_names(&entries).is_empty() {
        assert!(std::time::Instant::now() < deadline, "never cached");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    download().await;

    let text = scrape(metrics).await;
    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        count(r#"glint_store_written_bytes_total{store="default"}"#),
        100_000.0
    );
    // Only the miss read the store.
    assert_eq!(
        count(r#"glint_store_read_bytes_total{store="default"}"#),
        100_000.0
    );
    assert_eq!(count(r#"glint_cache_requests_total{result="miss"}"#), 1.0);
    assert_eq!(count(r#"glint_cache_requests_total{result="hit"}"#), 1.0);
    assert_eq!(
        count(
            r#"glint_http_requests_total{route="/v2/images/{id}/file",method="PUT",status="2xx"}"#
        ),
        1.0
    );
    assert_eq!(sd.stop().await, 0);
}

/// Every metric the packaged Grafana dashboard queries is one glint exposes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_packaged_dashboard_queries_only_metrics_that_exist() {
    let mut sd = FakeSystemd::new();
    sd.write_config(&config(Some("127.0.0.1:0")));
    sd.start().await;
    let metrics = metrics_addr(&sd).await.expect("metrics are on");
    let api = sd.bound_addr(SELF_BOUND_LISTEN).await;
    // What shows the families that have no series until something happens: requests, data
    // in and out of a store, a finished import.
    let id = support::create_image(api).await;
    let mut conn = support::Conn::open(api).await.expect("connect");
    let staged = conn
        .send(
            "PUT",
            &format!("/v2/images/{id}/stage"),
            Some("application/octet-stream"),
            vec![7u8; 4096].into(),
        )
        .await
        .expect("stage");
    assert_eq!(staged.status, 204);
    let (status, _) = conn
        .json(
            "POST",
            &format!("/v2/images/{id}/import"),
            "application/json",
            &serde_json::json!({"method": {"name": "glance-direct"}}),
        )
        .await
        .expect("import");
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + support::PATIENCE;
    while support::show_image(api, &id).await["status"] != "active" {
        assert!(
            std::time::Instant::now() < deadline,
            "the import never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let file = get_once(api, &format!("/v2/images/{id}/file"))
        .await
        .expect("get");
    assert_eq!(file.status, 200);
    let text = scrape(metrics).await;
    assert_eq!(
        sample(
            &text,
            r#"glint_tasks_total{method="glance-direct",status="success"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let families: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .collect();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana-dashboard.json"
    ))
    .expect("dashboard");
    let mut queried = 0;
    for (at, _) in dashboard.match_indices("glint_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(
            families.contains(&family),
            "the dashboard queries {name}, which glint does not expose: {families:?}"
        );
        queried += 1;
    }
    assert!(queried >= 20, "only {queried} queries found");
    assert_eq!(sd.stop().await, 0);
}
