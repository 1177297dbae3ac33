//! The edge's checks (shedding, the browser guard, authentication) as one kind of tower layer:
//! each decides before the inner service is called, with no await, so the layer's future is a
//! named type around the inner one. axum's `from_fn` boxed an async block and cloned the inner
//! service into a boxed `Next` for every request, three times over: six allocations and about
//! 1.3 KiB a layer held by each request in flight (heaptrack, a burst of 1000 streams).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use http::Request;
use tower::{Layer, Service};

/// A check made on each request before it goes on.
pub trait Check: Clone + Send + Sync + 'static {
    /// What a passed request keeps until its response (a slot it holds, say).
    type Pass: Pass;

    /// Lets the request go on (it may add to it), or answers it here.
    fn check(&self, request: &mut Request<Body>) -> Verdict<Self::Pass>;
}

/// A check's outcome.
pub enum Verdict<P> {
    /// The request goes on, keeping `P` until its response.
    Pass(P),
    /// The request ends here with this response.
    Answer(Response),
}

/// What a passed request keeps, given back its response.
pub trait Pass: Send + 'static {
    fn finish(self, response: Response) -> Response;
}

impl Pass for () {
    fn finish(self, response: Response) -> Response {
        response
    }
}

/// The layer of a [`Check`].
#[derive(Clone, Debug)]
pub struct GateLayer<C>(pub C);

impl<C: Clone, S> Layer<S> for GateLayer<C> {
    type Service = Gate<C, S>;

    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            check: self.0.clone(),
            inner,
        }
    }
}

/// A [`Check`] in front of `inner`.
#[derive(Clone, Debug)]
pub struct Gate<C, S> {
    check: C,
    inner: S,
}

impl<C, S> Service<Request<Body>> for Gate<C, S>
where
    C: Check,
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GateFuture<S::Future, C::Pass>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        match self.check.check(&mut request) {
            Verdict::Pass(pass) => GateFuture::Passed {
                inner: self.inner.call(request),
                pass: Some(pass),
            },
            Verdict::Answer(answer) => GateFuture::Answered {
                answer: Some(answer),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A passed request's inner future, or the check's own answer.
    #[project = GateProjection]
    pub enum GateFuture<F, P> {
        Passed { #[pin] inner: F, pass: Option<P> },
        Answered { answer: Option<Response> },
    }
}

impl<F, P> Future for GateFuture<F, P>
where
    F: Future<Output = Result<Response, Infallible>>,
    P: Pass,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GateProjection::Passed { inner, pass } => {
                let Ok(response) = std::task::ready!(inner.poll(cx));
                let pass = pass
                    .take()
                    .expect("a gate's future polled after it finished");
                Poll::Ready(Ok(pass.finish(response)))
            }
            GateProjection::Answered { answer } => Poll::Ready(Ok(answer
                .take()
                .expect("a gate's future polled after it finished"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Refuses requests without `x-let-in`, tags the ones it passes, and counts the responses
    /// its passes saw.
    #[derive(Clone)]
    struct Door(Arc<AtomicUsize>);

    struct Ticket(Arc<AtomicUsize>);

    impl Pass for Ticket {
        fn finish(self, mut response: Response) -> Response {
            self.0.fetch_add(1, Ordering::Relaxed);
            response
                .headers_mut()
                .insert("x-seen", http::HeaderValue::from_static("yes"));
            response
        }
    }

    impl Check for Door {
        type Pass = Ticket;

        fn check(&self, request: &mut Request<Body>) -> Verdict<Ticket> {
            if request.headers().contains_key("x-let-in") {
                request.extensions_mut().insert("tagged");
                Verdict::Pass(Ticket(self.0.clone()))
            } else {
                Verdict::Answer(
                    http::Response::builder()
                        .status(403)
                        .body(Body::empty())
                        .unwrap(),
                )
            }
        }
    }

    #[tokio::test]
    async fn a_refused_request_never_reaches_the_inner_service_and_a_passed_one_is_finished() {
        let called = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let inner = {
            let called = called.clone();
            tower::service_fn(move |request: Request<Body>| {
                called.fetch_add(1, Ordering::Relaxed);
                let tag = request
                    .extensions()
                    .get::<&str>()
                    .copied()
                    .unwrap_or("none");
                async move { Ok::<_, Infallible>(Response::new(Body::from(tag))) }
            })
        };
        let mut gate = GateLayer(Door(finished.clone())).layer(inner);

        let refused = gate.call(Request::new(Body::empty())).await.unwrap();
        assert_eq!(refused.status(), 403);
        assert_eq!(called.load(Ordering::Relaxed), 0);
        assert_eq!(finished.load(Ordering::Relaxed), 0);

        let passed = gate
            .call(
                Request::builder()
                    .header("x-let-in", "1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(passed.status(), 200);
        assert_eq!(passed.headers()["x-seen"], "yes");
        assert_eq!(called.load(Ordering::Relaxed), 1);
        assert_eq!(finished.load(Ordering::Relaxed), 1);
        let body = http_body_util::BodyExt::collect(passed.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(
            &body[..],
            b"tagged",
            "the check's change reached the inner service"
        );
    }
}
