"Lightning callbacks shared by the kill-and-resume tests (test_train.py, test_ssl.py)."
import lightning.pytorch as L


class Interrupt(L.Callback):
    "Stops training after `n` epochs, as a kill between epochs would."
    def __init__(self, n): self.n = n
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.n: trainer.should_stop = True


class RecordVal(L.Callback):
    "Records the validation loss of each epoch."
    def __init__(self): self.losses = {}
    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking: self.losses[trainer.current_epoch] = float(trainer.callback_metrics['val/loss'])
