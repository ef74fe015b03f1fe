-- Why a model version has its status: the activation gate's verdict against its
-- baselines and the active version, "not enough data", or a manual activation.
ALTER TABLE model_version ADD COLUMN status_reason TEXT;
