//! Test doubles of the worker plumbing.

/// Records the retry delays a consumer asks for, instead of talking to SQS.
#[derive(Default)]
pub struct RecordedDelays(std::sync::Mutex<Vec<i32>>);

impl RecordedDelays {
    pub fn recorded(&self) -> Vec<i32> {
        self.0.lock().map(|delays| delays.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl crate::sqs::RetryDelay for RecordedDelays {
    async fn delay(&self, _message: &aws_lambda_events::event::sqs::SqsMessage, seconds: i32) {
        if let Ok(mut delays) = self.0.lock() {
            delays.push(seconds);
        }
    }
}
