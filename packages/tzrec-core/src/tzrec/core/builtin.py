"""tzrec-core's own plugin: registered through the ``tzrec`` entry point like any other."""

from tzrec.core.hookspecs import Declare, Register, hookimpl

_COMMANDS = "tzrec.core.builtin_commands"

#: Config fields the engine (tzrec-core) reads and honours. Add a field here in the commit
#: that implements it; a set field that no package declares is refused at validation.
#: ``Message.*``: every field is passed on generically (optimizer kwargs, LR schedules).
SUPPORTED_FIELDS = (
    "EasyRecConfig.train_input_path",
    "EasyRecConfig.eval_input_path",
    "EasyRecConfig.model_dir",
    "EasyRecConfig.train_config",
    "EasyRecConfig.eval_config",
    "EasyRecConfig.data_config",
    "EasyRecConfig.feature_configs",
    "EasyRecConfig.model_config",
    # train_config
    "TrainConfig.sparse_optimizer",
    "TrainConfig.dense_optimizer",
    "TrainConfig.num_steps",
    "TrainConfig.num_epochs",
    "TrainConfig.save_checkpoints_steps",
    "TrainConfig.save_checkpoints_epochs",
    "TrainConfig.keep_checkpoint_max",
    "TrainConfig.fine_tune_checkpoint",
    "TrainConfig.fine_tune_ckpt_param_map",
    "TrainConfig.gradient_accumulation_steps",
    "TrainConfig.mixed_precision",  # BF16 / FP16 autocast (tzrec.core.engine.engine)
    # loss scaling, fused embedding tables included (tzrec.core.amp)
    "TrainConfig.grad_scaler",
    "GradScaler.*",
    "TrainConfig.log_step_count_steps>0",
    "TrainConfig.use_tensorboard",
    "TrainConfig.grad_clipping",
    "GradClipping.clipping_type",
    "GradClipping.max_gradient",
    "GradClipping.norm_type",
    "GradClipping.enable_global_grad_clip",
    # eval_config
    "EvalConfig.num_steps",
    # sparse optimizers: fbgemm fused kernels (adadelta / rmsprop have none)
    "SparseOptimizer.sgd_optimizer",
    "SparseOptimizer.adagrad_optimizer",
    "SparseOptimizer.adam_optimizer",
    "SparseOptimizer.lars_sgd_optimizer",
    "SparseOptimizer.lamb_optimizer",
    "SparseOptimizer.partial_rowwise_lamb_optimizer",
    "SparseOptimizer.partial_rowwise_adam_optimizer",
    "SparseOptimizer.rowwise_adagrad_optimizer",
    "SparseOptimizer.constant_learning_rate",
    "SparseOptimizer.exponential_decay_learning_rate",
    "SparseOptimizer.manual_step_learning_rate",
    "SparseOptimizer.cosine_annealing_learning_rate",
    "SparseOptimizer.cosine_annealing_warm_restarts_learning_rate",
    "FusedSGDOptimizer.*",
    "FusedAdagradOptimizer.lr",  # initial_accumulator_value: fbgemm starts at 0
    "FusedAdagradOptimizer.gradient_clipping",
    "FusedAdagradOptimizer.max_gradient",
    "FusedAdamOptimizer.*",
    "FusedLarsSGDOptimizer.*",
    "FusedLAMBOptimizer.*",
    "FusedPartialRowWiseLAMBOptimizer.*",
    "FusedPartialRowWiseAdamOptimizer.*",
    "FusedRowWiseAdagradOptimizer.*",
    # dense optimizers: torch.optim, every field a constructor argument
    "DenseOptimizer.sgd_optimizer",
    "DenseOptimizer.adagrad_optimizer",
    "DenseOptimizer.adam_optimizer",
    "DenseOptimizer.adamw_optimizer",
    "DenseOptimizer.adadelta_optimizer",
    "DenseOptimizer.rmsprop_optimizer",
    "DenseOptimizer.constant_learning_rate",
    "DenseOptimizer.exponential_decay_learning_rate",
    "DenseOptimizer.manual_step_learning_rate",
    "DenseOptimizer.cosine_annealing_learning_rate",
    "DenseOptimizer.cosine_annealing_warm_restarts_learning_rate",
    "DenseOptimizer.part_optimizers",
    "PartOptimizer.*",
    "SGDOptimizer.*",
    "AdagradOptimizer.*",
    "AdamOptimizer.*",
    "AdamWOptimizer.*",
    "AdadeltaOptimizer.*",
    "RMSpropOptimizer.*",
    # learning-rate schedules: every field a schedule argument
    "ConstantLR.*",
    "ExponentialDecayLR.*",
    "ManualStepLR.*",
    "CosineAnnealingLR.*",
    "CosineAnnealingWarmRestartsLR.*",
)


@hookimpl
def register_commands(register: Register) -> None:
    """Core subcommands (lazy references keep ``tzrec --help`` fast)."""
    register("plugins", f"{_COMMANDS}:PluginsCommand")
    register("train", f"{_COMMANDS}:TrainCommand")
    register("eval", f"{_COMMANDS}:EvalCommand")
    register("run", f"{_COMMANDS}:RunCommand")


@hookimpl
def register_supported_fields(declare: Declare) -> None:
    """The train/eval engine's fields (:data:`SUPPORTED_FIELDS`)."""
    declare(*SUPPORTED_FIELDS)
