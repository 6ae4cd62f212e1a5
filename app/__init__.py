"""The payment-recording service: a Faust app with its settings, models and connections."""
